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
