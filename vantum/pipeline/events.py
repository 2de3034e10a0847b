"""What the session tells the caller, as typed values.

The pipeline emits only these frozen classes; the wire form (the browser's
MessagePack envelope, Twilio's media-stream JSON, another dialect) exists only in
the transport that speaks it, and observers (call records, traces, metrics) match
on the types. A misspelled payload key is now a type error, not a silent ``None``.

Like h11's events, the classes carry the meaning, not the encoding: durations are
milliseconds as floats, instants are Unix epoch milliseconds (``*_ms``), audio is
PCM16LE bytes with its rate.
"""

from __future__ import annotations

from typing import Literal

import attrs


@attrs.frozen
class SessionReady:
    """The session exists (``connection.lifecycle.ack``): the first event of every call."""


AckedInput = Literal["audio.input.start", "audio.input.end"]


@attrs.frozen
class InputAcknowledged:
    """A client event that is ACKed was accepted; ``event_id`` is the client's id."""

    of: AckedInput
    event_id: str
    name: str | None = None
    """The eventType the client sent (an alias such as ``voicechat.audio.start``),
    which the ACK echoes; None: the canonical ``of``."""


@attrs.frozen
class TranscriptInterim:
    """Provisional text of the caller's current segment; repeats and grows."""

    text: str
    confidence: float
    at_ms: int
    language: str


@attrs.frozen
class TranscriptFinal:
    """Settled text of a segment; a turn's text is its finals joined."""

    text: str
    confidence: float
    at_ms: int
    language: str


@attrs.frozen
class ResponseStarted:
    utterance_id: str
    at_ms: int


@attrs.frozen
class ResponseText:
    """One speakable chunk of the answer's text, as it goes to the TTS."""

    utterance_id: str
    text: str


@attrs.frozen
class OutputStarted:
    """The answer's audio begins (before its first chunk)."""

    utterance_id: str
    at_ms: int


@attrs.frozen
class OutputChunk:
    """Answer audio, PCM16LE mono at ``rate`` Hz, released at real-time pace."""

    utterance_id: str
    pcm: bytes
    rate: int


@attrs.frozen
class OutputComplete:
    utterance_id: str


CancelReason = Literal["barge_in", "call_ended"]


@attrs.frozen
class OutputCancelled:
    """The answer's audio was cut; no chunk of ``utterance_id`` follows."""

    utterance_id: str
    reason: CancelReason


@attrs.frozen
class OutputPaused:
    """The caller may be talking over the answer: stop playing it now and drop what is
    buffered. It is not over: ``OutputResumed`` or ``OutputCancelled`` follows, and no
    chunk of ``utterance_id`` comes in between. ``played_ms`` is how much of the
    answer's audio the server counts as heard; a resumed answer's chunks start there
    again (what the client dropped is sent again)."""

    utterance_id: str
    played_ms: float


@attrs.frozen
class OutputResumed:
    """The speech that paused the answer was not a barge-in: its chunks follow again,
    from ``played_ms`` into the answer's audio."""

    utterance_id: str
    played_ms: float


@attrs.frozen
class ResponseComplete:
    """The answer is over (spoken, interrupted or failed)."""

    utterance_id: str


@attrs.frozen
class TurnMetrics:
    """Stage latencies of one answer in milliseconds on the server's clock; None
    where a stage did not happen."""

    utterance_id: str
    end_of_speech_to_final_ms: float | None = None
    final_to_llm_first_token_ms: float | None = None
    llm_first_token_to_tts_first_audio_ms: float | None = None
    tts_first_audio_to_first_audio_sent_ms: float | None = None
    voice_to_voice_ms: float | None = None
    speculative: bool = False
    underruns: int = 0
    late_audio_ms: float = 0.0


@attrs.frozen
class DtmfReceived:
    """A phone keypad digit (it also becomes a user turn)."""

    digit: str


@attrs.frozen
class ToolCalled:
    """The model called a tool (``conversation.tool.call``); it runs now."""

    call_id: str
    name: str
    arguments: str
    """The JSON text the model wrote (it may not be valid JSON: the result says so)."""


@attrs.frozen
class ToolFinished:
    """A tool call ended (``conversation.tool.result``): ``ok`` false for any failure
    the model was told about (error, timeout, refusal); ``duration_ms`` on the server's
    clock."""

    call_id: str
    name: str
    ok: bool
    duration_ms: float


@attrs.frozen
class TransferRequested:
    """``transfer_call`` ran (``conversation.tool.transfer``): the caller should be put
    through to ``target`` (a browser page acts on it; Twilio is redirected by Vantum)."""

    target: str


CallEndReason = Literal["hangup", "max_duration"]


@attrs.frozen
class CallEnded:
    """The server ends the call (then closes the connection normally)."""

    reason: CallEndReason
    message: str


@attrs.frozen
class ErrorEvent:
    """Something went wrong; the session goes on unless the transport closes after it.

    ``code`` is the documented error name (``<domain>.error.<kind>``, or
    ``error.system.unknown``); ``request`` names what caused it: the client event
    type, ``turn`` for an answer, ``connect`` for a refused connection.
    """

    code: str
    message: str
    request: str = "unknown"
    reason: str | None = None
    """A machine-readable sub-reason where documented (``connection.error.auth``)."""
    event_id: str | None = None
    """The ``eventId`` of the client frame that caused the error, which the error
    echoes; None where no frame did (or it could not be read): a fresh id is sent."""
    session_id: str | None = None
    """The ``sessionId`` that frame carried, echoed likewise; None: the connection's."""

    @property
    def domain(self) -> str:
        """``audio``, ``stt``, ``llm``, ``connection``... (``system`` for ``error.system.*``)."""
        head, sep, _ = self.code.partition(".error.")
        return head if sep else self.code.split(".")[1]

    @property
    def kind(self) -> str:
        return self.code.rpartition(".")[2]


ServerEvent = (
    SessionReady
    | InputAcknowledged
    | TranscriptInterim
    | TranscriptFinal
    | ResponseStarted
    | ResponseText
    | OutputStarted
    | OutputChunk
    | OutputComplete
    | OutputCancelled
    | OutputPaused
    | OutputResumed
    | ResponseComplete
    | TurnMetrics
    | DtmfReceived
    | ToolCalled
    | ToolFinished
    | TransferRequested
    | CallEnded
    | ErrorEvent
)
"""Every event the pipeline may send towards the caller."""


__all__ = [
    "AckedInput",
    "CallEndReason",
    "CallEnded",
    "CancelReason",
    "DtmfReceived",
    "ErrorEvent",
    "InputAcknowledged",
    "OutputCancelled",
    "OutputChunk",
    "OutputComplete",
    "OutputPaused",
    "OutputResumed",
    "OutputStarted",
    "ResponseComplete",
    "ResponseStarted",
    "ResponseText",
    "ServerEvent",
    "SessionReady",
    "ToolCalled",
    "ToolFinished",
    "TranscriptFinal",
    "TranscriptInterim",
    "TransferRequested",
    "TurnMetrics",
]
