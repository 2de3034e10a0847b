"""The three provider interfaces the pipeline talks to.

The session pipeline never imports a concrete provider: it receives objects that
satisfy these Protocols, so Deepgram, Cartesia, an OpenAI-compatible server and
the embedded offline engines are interchangeable without touching pipeline code.

Every engine is an *actor*: an ``async`` method that consumes a receive channel and
produces into a send channel, returning when its input is exhausted. Cancellation
(barge-in, hang-up) arrives through trio's cancel scopes, never through flags.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import attrs
import trio

# --------------------------------------------------------------------------- STT

STT_SAMPLE_RATE = 16_000
"""Every STT engine receives 16 kHz PCM16LE mono; the resampler guarantees it."""


@attrs.frozen
class Finalize:
    """In-band marker on the STT audio channel: flush everything heard so far.

    It travels in the same channel as the audio so it can never overtake audio
    that was sent before it.
    """


@attrs.frozen
class TranscriptEvent:
    """A recognised span of speech. Interim results repeat and grow until final."""

    text: str
    is_final: bool
    speech_final: bool = False
    from_finalize: bool = False
    confidence: float = 0.0
    start: float = 0.0
    """Seconds since the start of the audio stream."""
    duration: float = 0.0
    language: str = "en-US"


@attrs.frozen
class SpeechStarted:
    """The provider's VAD heard speech begin (seconds since stream start)."""

    timestamp: float


@attrs.frozen
class UtteranceEnd:
    """The provider saw a gap after the last word (seconds since stream start)."""

    last_word_end: float


@attrs.frozen
class FinalizeDone:
    """Emitted exactly once per :class:`Finalize`, after the results it flushed."""

    unanswered: bool = False
    """The provider never acknowledged the Finalize: the engine gave up waiting, so
    words of the turn may still be missing (they can arrive later, or never). A turn
    that closes empty on such a FinalizeDone is reported to the caller, not dropped
    silently: the client is waiting for an answer to something it said."""


STTInput = bytes | Finalize
STTEvent = TranscriptEvent | SpeechStarted | UtteranceEnd | FinalizeDone


class STTEngine(Protocol):
    """A streaming recogniser for one session."""

    name: str

    async def run(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        *,
        language: str = "en-US",
    ) -> None:
        """Recognise ``audio`` (16 kHz PCM16LE mono chunks and Finalize markers).

        Returns once ``audio`` is closed and the last results are delivered, and
        closes ``events`` on the way out. Reconnects transparently where the
        provider allows; raises :class:`vantum.errors.STTError` when it cannot.
        Every ``Finalize`` taken from ``audio`` is answered by exactly one
        ``FinalizeDone``, also before raising: the turn manager waits for it.
        """
        ...


# --------------------------------------------------------------------------- LLM


@attrs.frozen
class ToolCall:
    """One function call the model asked for, complete (its arguments fully streamed).

    ``arguments`` is the JSON text as the model wrote it: the model may write
    invalid JSON, and that is the tool runtime's to report back, not the client's.
    """

    id: str
    name: str
    arguments: str


@attrs.frozen
class ToolSchema:
    """A function the model may call: OpenAI's ``{"type": "function", "function": ...}``."""

    name: str
    description: str
    parameters: Mapping[str, Any]


Role = Literal["system", "user", "assistant", "tool"]


@attrs.frozen
class ChatMessage:
    role: str  # Role: "system" | "user" | "assistant" | "tool"
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    """An assistant message that called tools (its ``content`` may be empty)."""
    tool_call_id: str | None = None
    """A ``tool`` message: the result of the call with this id."""


NO_TOOLS: tuple[ToolSchema, ...] = ()
NO_CALLS: tuple[ToolCall, ...] = ()


class LLMEngine(Protocol):
    """A streaming chat model."""

    name: str

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = NO_TOOLS,
    ) -> Sequence[ToolCall]:
        """Send the answer's text deltas to ``out`` as they arrive; return the tool
        calls the model made (empty when it only talked, always without ``tools``).

        Tool calls are returned, not sent down ``out``: a call can only run once its
        arguments are complete, and the text channel stays ``str`` so an answer
        without tools does no per-token type dispatch it did not do before.

        Does not close ``out`` (the caller may retry into the same channel).
        Raises :class:`vantum.errors.LLMError` with a kind that tells whether a
        retry may help. Cancelling the caller's scope closes the HTTP stream.
        """
        ...


# --------------------------------------------------------------------------- TTS


@attrs.frozen
class TTSAudio:
    """PCM16LE mono at the connection's ``sample_rate``."""

    pcm: bytes


@attrs.frozen
class WordTimestamps:
    """Word timings relative to the start of the context's audio, in seconds."""

    words: tuple[str, ...]
    start: tuple[float, ...]
    end: tuple[float, ...]


TTSEvent = TTSAudio | WordTimestamps


class TTSConnection(Protocol):
    """One provider connection, shared by all answers of a session."""

    @property
    def sample_rate(self) -> int:
        """The rate of the audio this connection produces."""
        ...

    async def synthesize(
        self,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        out: trio.MemorySendChannel[TTSEvent],
        *,
        voice_id: str | None = None,
        language: str | None = None,
    ) -> None:
        """Speak every text chunk from ``text`` as one continuous utterance.

        ``language`` is the call's BCP-47 tag (``es-ES``); an engine that can speak it
        should, and one that cannot keeps its own (the text is still spoken).

        Returns when ``text`` is closed and the provider has sent all audio for
        the context. Does not close ``out``. If cancelled, tells the provider to
        cancel the context before returning. Raises :class:`vantum.errors.TTSError`
        when the provider reports an error for this context.
        """
        ...


class TTSEngine(Protocol):
    name: str
    sample_rate: int

    def connect(self, sample_rate: int | None = None) -> AbstractAsyncContextManager[TTSConnection]:
        """Open the session's connection (closed when the context exits).

        ``sample_rate`` is the caller's playback rate. An engine that can produce
        it natively should, because resampling every answer chunk is one of the
        larger per-call CPU costs; one that cannot ignores it. Either way the
        connection's ``sample_rate`` tells the player what it gets.
        """
        ...


# --------------------------------------------------------------------------- S2S
#
# A speech-to-speech model (OpenAI Realtime) hears the caller and speaks the answer
# itself: one engine in place of STT + LLM + TTS. The pipeline keeps what it owns in
# the cascade: the floor (barge-in), playback pacing, what was heard, tools and the
# history; the engine is one connection actor with typed commands up and events down.

S2S_SAMPLE_RATE = 24_000
"""Audio to and from an S2S engine is PCM16LE mono at 24 kHz (the resampler adapts)."""


@attrs.frozen
class S2SSetup:
    """What a session is configured with (sent again when the caller's settings change)."""

    instructions: str
    voice: str | None = None
    tools: tuple[ToolSchema, ...] = ()
    auto_turns: bool = False
    """True: the provider's VAD ends turns and starts answers (and cancels an answer
    the caller speaks over); False: the pipeline commits and asks for each answer."""
    silence_ms: int = 500
    language: str = "en-US"


@attrs.frozen
class S2SAudioIn:
    pcm: bytes


@attrs.frozen
class S2SCommit:
    """End the caller's turn (manual turns)."""


@attrs.frozen
class S2SClear:
    """Drop the caller's audio not yet committed."""


@attrs.frozen
class S2SRespond:
    """Ask for an answer (manual turns, typed turns, after tool results)."""


@attrs.frozen
class S2SCancel:
    """Cancel the answer being generated. Never sent after the provider's own VAD cut
    it (that would cancel the *next* answer, or fail)."""


@attrs.frozen
class S2STruncate:
    item_id: str
    audio_end_ms: int


@attrs.frozen
class S2SDelete:
    item_id: str


@attrs.frozen
class S2SToolResult:
    call_id: str
    output: str


@attrs.frozen
class S2SAddText:
    role: Literal["user", "assistant", "system"]
    text: str


@attrs.frozen
class S2SUpdate:
    setup: S2SSetup


@attrs.frozen
class S2SRemember:
    """The pipeline's own history (what was heard), replayed if the connection is
    replaced: the engine keeps only the latest."""

    messages: tuple[ChatMessage, ...]


S2SCommand = (
    S2SAudioIn
    | S2SCommit
    | S2SClear
    | S2SRespond
    | S2SCancel
    | S2STruncate
    | S2SDelete
    | S2SToolResult
    | S2SAddText
    | S2SUpdate
    | S2SRemember
)


@attrs.frozen
class S2SSpeechStarted:
    """The provider's VAD heard the caller start (it has cancelled its answer)."""


@attrs.frozen
class S2SSpeechStopped:
    pass


@attrs.frozen
class S2SUserTranscript:
    """The caller's words; may arrive after the answer to them has started."""

    item_id: str
    text: str
    is_final: bool


@attrs.frozen
class S2SAnswerStarted:
    response_id: str


@attrs.frozen
class S2SAnswerItem:
    """An audio item of the answer begins (an answer may have several)."""

    response_id: str
    item_id: str


@attrs.frozen
class S2SAnswerAudio:
    response_id: str
    item_id: str
    pcm: bytes


@attrs.frozen
class S2SAnswerText:
    """The provider's transcript of the answer's audio: ahead of what was heard."""

    response_id: str
    item_id: str
    delta: str


@attrs.frozen
class S2SAnswerItemDone:
    response_id: str
    item_id: str
    transcript: str


@attrs.frozen
class S2SAnswerDone:
    response_id: str
    status: str
    """``completed``, ``cancelled``, ``failed``, ``incomplete``."""
    calls: tuple[ToolCall, ...] = ()


@attrs.frozen
class S2SReconnected:
    """The connection was replaced (session cap or a failure) and the history replayed."""

    reason: str


@attrs.frozen
class S2SFailure:
    """An error the provider reported (or a lost connection); the call goes on."""

    code: str
    message: str


S2SEvent = (
    S2SSpeechStarted
    | S2SSpeechStopped
    | S2SUserTranscript
    | S2SAnswerStarted
    | S2SAnswerItem
    | S2SAnswerAudio
    | S2SAnswerText
    | S2SAnswerItemDone
    | S2SAnswerDone
    | S2SReconnected
    | S2SFailure
)


class S2SConnection(Protocol):
    """One call's provider session (replaced transparently before its cap)."""

    async def send(self, command: S2SCommand) -> None:
        """Queue a command (bounded: audio waits while a replacement connects)."""
        ...

    @property
    def events(self) -> trio.MemoryReceiveChannel[S2SEvent]:
        """What the provider says, in its order; closed when the connection ends."""
        ...


class S2SEngine(Protocol):
    name: str

    def connect(self, setup: S2SSetup) -> AbstractAsyncContextManager[S2SConnection]:
        """Open the call's session; raises :class:`vantum.errors.VantumError` if it
        cannot. Leaving the context closes it."""
        ...
