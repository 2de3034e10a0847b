"""Values that flow between a session's actors.

Actors share nothing but these values and the bounded channels that carry them.
"""

from __future__ import annotations

from typing import Literal

import attrs
import trio

from ..protocol.client_events import ClientEvent, PlaybackProgress
from ..providers.base import Finalize, STTEvent, STTInput
from .events import TurnMetrics
from .settings import CallSettings


@attrs.frozen
class VoiceStart:
    """The local VAD heard the caller start speaking (trio time)."""

    at: float


@attrs.frozen
class VoiceSustained:
    """The caller's current stretch of speech has lasted ``speech_ms`` by the VAD's
    frames (less its hangover): as long as a barge-in needs (sent once per stretch,
    when it gets there)."""

    at: float
    speech_ms: int


@attrs.frozen
class VoiceEnd:
    """The local VAD heard ``silence_ms`` of silence after speech (auto mode ends the
    turn here; a Finalize follows in-band on the STT stream). ``speech_ms`` is the
    stretch's length by the VAD's frames, less its hangover."""

    at: float
    speech_ms: int
    auto_end: bool
    early_ms: int = 0
    """Semantic end of turn: the end-of-turn model ended the turn this long before the
    silence would have; the turn manager waits that long (the ceiling) instead when
    the transcript stops mid-phrase. 0: the silence ended it."""


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
class HoldExpired:
    """The paused answer's confirmation window ran out (synthesised by the actor)."""

    at: float


@attrs.frozen
class TurnCeiling:
    """A turn held open by its transcript (it stopped mid-phrase after an early end)
    reached the configured silence: it ends now (synthesised by the actor)."""

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
class InputStarted:
    """The caller sent ``audio.input.start``: these are the call's settings from now on
    (over the bot's answer, it is also a barge-in: the turn manager decides)."""

    settings: CallSettings
    at: float


@attrs.frozen
class AnswerAudible:
    """The responder sent the answer's first audio: the bot is speaking."""

    at: float


@attrs.frozen
class EndCallRequested:
    """Responder → turn manager: the agent ended the call (the ``end_call`` tool); hang
    up once the answers queued, its goodbye included, have been spoken."""

    reason: str = "end_call"


CallOverReason = Literal["peer_gone", "hangup", "max_duration"]


@attrs.frozen
class CallOver:
    """The session's last word to the turn manager: no more input will come.

    After a hang-up the answers already queued (the goodbye) are still spoken; for
    any other reason the answer in progress is cut and queued ones are dropped.
    """

    reason: CallOverReason


ControlEvent = (
    InputEnded
    | TextTurn
    | InputStarted
    | VoiceStart
    | VoiceSustained
    | VoiceEnd
    | AnswerAudible
    | ResponseFinished
    | IdleTimeout
    | HoldExpired
    | TurnCeiling
    | PlaybackProgress
    | CallOver
    | EndCallRequested
)
TurnInput = STTEvent | ControlEvent


@attrs.frozen
class BotSpeaking:
    """In band on the audio channel: answer audio is (or is no longer) being played.

    The audio path sends the caller's speech to the STT frame by frame while the bot
    talks, so barge-in words arrive without waiting for a batch.
    """

    speaking: bool


AudioItem = bytes | Finalize | CallSettings | BotSpeaking
"""What the audio path reads: caller audio at the settings' rate, in-band markers."""

SttItem = STTInput | CallSettings
"""What the STT supervisor reads: 16 kHz audio, Finalize, and settings (a new
language restarts the recogniser)."""


@attrs.frozen
class Interrupt:
    """Turn manager → responder: cut the answer being spoken (barge-in)."""

    reason: str


@attrs.frozen
class Pause:
    """Turn manager → responder: the caller may be taking the floor; stop sending the
    answer's audio now and hold it (it has not been cut: ``Resume`` or ``Interrupt``
    follows within ``TurnPolicy.barge_in_confirm_ms``)."""

    reason: str = "caller_speech"


@attrs.frozen
class Resume:
    """Turn manager → responder: the speech that paused the answer was not a barge-in
    (a cough, noise, a backchannel); continue it from what the caller last heard."""


@attrs.frozen
class HangUp:
    """Turn manager → session: end the call; every queued answer has been spoken."""

    reason: str


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

    def metrics(self, utterance_id: str, underruns: int, late_seconds: float) -> TurnMetrics:
        """The ``metrics.turn`` event of the answer these timings belong to."""

        def ms(a: float | None, b: float | None) -> float | None:
            if a is None or b is None:
                return None
            return round((b - a) * 1000.0, 1)

        eos = self.end_of_speech
        return TurnMetrics(
            utterance_id,
            end_of_speech_to_final_ms=ms(eos, self.transcript_final),
            final_to_llm_first_token_ms=ms(self.transcript_final, self.llm_first_token),
            llm_first_token_to_tts_first_audio_ms=ms(self.llm_first_token, self.tts_first_audio),
            tts_first_audio_to_first_audio_sent_ms=ms(self.tts_first_audio, self.first_audio_sent),
            voice_to_voice_ms=ms(eos, self.first_audio_sent),
            speculative=self.speculative,
            underruns=underruns,
            late_audio_ms=round(late_seconds * 1000.0, 1),
        )


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

    ``canned`` answers (the greeting, idle prompts, goodbyes) are spoken as given,
    without the LLM and without entering the conversation as a user message.
    """

    text: str
    timings: TurnTimings
    canned: bool = False
    gate: SpeculationGate | None = None
    interruptible: bool = True
    """False: no barge-in cuts it (a greeting with ``greeting_interruptible = false``);
    the end of the call still does."""


ResponderCommand = TurnRequest | CallSettings | Interrupt | Pause | Resume | PlaybackProgress
"""What the turn manager tells the responder, in order: one answer to speak at a time
(the next only after the previous one's ``ResponseFinished``), new settings (for the
next answer), barge-ins, pauses and resumptions of the answer's audio, and what the
carrier confirmed the caller heard."""


__all__ = [
    "AnswerAudible",
    "AudioItem",
    "BotSpeaking",
    "CallOver",
    "CallOverReason",
    "ClientEvent",
    "ControlEvent",
    "EndCallRequested",
    "HangUp",
    "HoldExpired",
    "IdleTimeout",
    "InputEnded",
    "InputStarted",
    "Interrupt",
    "Pause",
    "ResponderCommand",
    "ResponseFinished",
    "Resume",
    "SpeculationGate",
    "SttItem",
    "TextTurn",
    "TurnCeiling",
    "TurnInput",
    "TurnRequest",
    "TurnTimings",
    "VoiceEnd",
    "VoiceStart",
    "VoiceSustained",
]
