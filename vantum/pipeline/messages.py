"""Values that flow between a session's actors.

Actors share nothing but these values and the bounded channels that carry them.
"""

from __future__ import annotations

from typing import Any

import attrs
import trio

from ..protocol.client_events import ClientEvent
from ..providers.base import STTEvent


@attrs.frozen
class ServerEvent:
    """One event for the client, before any wire encoding (the transport encodes)."""

    event_type: str
    payload: dict[str, Any]
    event_id: str | None = None
    request_type: str | None = None


@attrs.frozen
class AudioFormat:
    """In-band on the audio channel: audio after this marker is at ``rate`` Hz, and
    the VAD should end turns by itself when ``turn_mode`` is ``auto``."""

    rate: int
    turn_mode: str = "manual"
    silence_ms: int = 500


@attrs.frozen
class VoiceStart:
    """The local VAD heard the caller start speaking (trio time)."""

    at: float


@attrs.frozen
class VoiceEnd:
    """The local VAD heard ``silence_ms`` of silence after speech (auto mode ends the
    turn here; a Finalize follows in-band on the STT stream)."""

    at: float
    speech_ms: int
    auto_end: bool


@attrs.frozen
class ResponseFinished:
    """The responder finished (or abandoned) an answer; restarts the idle timer."""

    at: float
    interrupted: bool = False


@attrs.frozen
class IdleTimeout:
    """Nothing happened for the configured idle time (synthesised by the actor)."""

    at: float


@attrs.frozen
class InputEnded:
    """The caller ended the turn (manual mode); ``at`` is trio time."""

    at: float


@attrs.frozen
class TextTurn:
    """A typed user turn (``conversation.text.input``)."""

    text: str
    at: float


@attrs.frozen
class ModeChanged:
    turn_mode: str
    language: str
    silence_ms: int = 500


ControlEvent = (
    InputEnded | TextTurn | ModeChanged | VoiceStart | VoiceEnd | ResponseFinished | IdleTimeout
)
TurnInput = STTEvent | ControlEvent


@attrs.define
class TurnTimings:
    """Trio-clock instants of one turn; differences become ``metrics.turn``."""

    end_of_speech: float | None = None
    transcript_final: float | None = None
    llm_first_token: float | None = None
    tts_first_audio: float | None = None
    first_audio_sent: float | None = None
    speculative: bool = False
    """The LLM started on the interim transcript, before the final one."""

    def as_payload(self) -> dict[str, float | None]:
        def ms(a: float | None, b: float | None) -> float | None:
            if a is None or b is None:
                return None
            return round((b - a) * 1000.0, 1)

        eos = self.end_of_speech
        return {
            "endOfSpeechToFinalMs": ms(eos, self.transcript_final),
            "finalToLlmFirstTokenMs": ms(self.transcript_final, self.llm_first_token),
            "llmFirstTokenToTtsFirstAudioMs": ms(self.llm_first_token, self.tts_first_audio),
            "ttsFirstAudioToFirstAudioSentMs": ms(self.tts_first_audio, self.first_audio_sent),
            "voiceToVoiceMs": ms(eos, self.first_audio_sent),
            "speculative": self.speculative,
        }


@attrs.define(eq=False)
class SpeculationGate:
    """Holds a speculative answer until the final transcript confirms its input.

    The LLM starts on the caller's stable interim text at end of speech; nothing is
    sent to the caller until the turn manager accepts (the final transcript says the
    same) or rejects (it does not: the answer is dropped unheard and redone).
    """

    accepted: bool = False
    _decided: trio.Event = attrs.Factory(trio.Event)

    def accept(self) -> None:
        self.accepted = True
        self._decided.set()

    def reject(self) -> None:
        self._decided.set()

    async def wait(self) -> bool:
        await self._decided.wait()
        return self.accepted


@attrs.frozen
class TurnRequest:
    """Ask the responder for one spoken answer to ``text``.

    ``canned`` answers (idle prompts, goodbyes) are spoken as given, without the LLM
    and without entering the conversation as a user message.
    """

    text: str
    timings: TurnTimings
    canned: bool = False
    gate: SpeculationGate | None = None


__all__ = [
    "AudioFormat",
    "ClientEvent",
    "ControlEvent",
    "IdleTimeout",
    "InputEnded",
    "ModeChanged",
    "ResponseFinished",
    "ServerEvent",
    "SpeculationGate",
    "TextTurn",
    "TurnInput",
    "TurnRequest",
    "TurnTimings",
    "VoiceEnd",
    "VoiceStart",
]
