"""One spoken answer: LLM → chunker → TTS → player, inside one cancel scope.

An :class:`Answer` runs its stages as tasks of one nursery joined by bounded
channels. Cancelling its scope (a barge-in, the end of the call) stops all of them:
the LLM stream is closed, the TTS context is cancelled at the provider and unplayed
audio is dropped. :meth:`Answer.run` returns an :class:`AnswerOutcome` saying what
happened, so the responder never reads flags after a cancel.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time

import attrs
import trio

from ..errors import LLMError, TTSError
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..providers.base import ChatMessage, LLMEngine, TTSConnection, TTSEngine, TTSEvent
from ..providers.llm_retry import FallbackMessages, stream_with_retry
from ..providers.reporting import report
from .chunker import SemanticChunker
from .events import CancelReason, ErrorEvent, ResponseStarted, ResponseText, ServerEvent
from .messages import AnswerAudible, BotSpeaking, SpeculationGate, TurnInput, TurnTimings
from .meter import AudioMeter
from .player import Playback, PlayerControl, play
from .settings import CallSettings

log = logging.getLogger("vantum.responder")


@attrs.frozen
class AnswerOutcome:
    """How one answer ended."""

    utterance_id: str
    spoken: str
    """Everything the answer said (its text chunks joined); what was *heard* of an
    interrupted answer is decided later from ``playback``."""
    playback: Playback
    tts_ok: bool = True
    """False when the TTS failed: the responder reconnects before the next answer."""
    interrupted: bool = False
    dropped: bool = False
    """A speculative answer whose guess the final transcript did not confirm:
    nothing of it reached the caller and it enters no history."""


@attrs.define(eq=False)
class AnswerContext:
    """What an answer needs from its call: engines, settings and where to report."""

    llm: LLMEngine
    tts: TTSEngine
    settings: CallSettings
    out: trio.MemorySendChannel[ServerEvent]
    inbox: trio.MemorySendChannel[TurnInput]
    """The turn manager: it hears when the answer becomes audible."""
    audio_ctl: trio.MemorySendChannel[BotSpeaking] | None
    """The audio path: it sends caller speech frame by frame while the bot talks."""
    meter: AudioMeter
    fallbacks: FallbackMessages
    session_id: str = ""


@attrs.define(eq=False)
class Answer:
    """Speaks one answer; ``scope`` is its barge-in switch, ``control`` its pause."""

    ctx: AnswerContext
    conn: TTSConnection | None
    messages: list[ChatMessage]
    """The LLM request (history plus this turn's user message)."""
    timings: TurnTimings
    canned_text: str | None = None
    """Spoken as is, without the LLM (idle prompts, goodbyes)."""
    gate: SpeculationGate | None = None
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    control: PlayerControl = attrs.Factory(PlayerControl)
    """Its pause switch: caller speech holds the audio until confirmed or not."""
    cancel_reason: CancelReason = "barge_in"
    """What ``audio.output.cancel`` says if ``scope`` is cancelled."""
    utterance_id: str = attrs.Factory(new_id)
    playback: Playback = attrs.field(init=False)
    _spoken: list[str] = attrs.Factory(list)
    _tts_ok: bool = True

    def __attrs_post_init__(self) -> None:
        self.playback = Playback(self.utterance_id, self.ctx.settings.output_rate)

    async def run(self) -> AnswerOutcome:
        """Speak the answer; returns when it is over (played, cut or dropped)."""
        dropped = False
        with self.scope:
            async with trio.open_nursery() as nursery:
                tokens_tx, tokens_rx = trio.open_memory_channel[str](256)
                nursery.start_soon(self._call_llm, tokens_tx)
                if self.gate is not None and not await self.gate.wait():
                    dropped = True  # a wrong guess: dropped before the caller saw anything
                    self.scope.cancel()
                await self.ctx.out.send(ResponseStarted(self.utterance_id, _wall_ms()))
                text_tx, text_rx = trio.open_memory_channel[str](8)
                audio_tx, audio_rx = trio.open_memory_channel[TTSEvent](32)
                nursery.start_soon(self._produce_text, tokens_rx, text_tx)
                nursery.start_soon(self._synthesize, text_rx, audio_tx)
                nursery.start_soon(self._play, audio_rx)
        return AnswerOutcome(
            self.utterance_id,
            " ".join(self._spoken),
            self.playback,
            tts_ok=self._tts_ok,
            interrupted=self.scope.cancelled_caught and not dropped,
            dropped=dropped,
        )

    async def _call_llm(self, tokens_tx: trio.MemorySendChannel[str]) -> None:
        async with tokens_tx:
            if self.canned_text is not None:
                await tokens_tx.send(self.canned_text)
                return
            fallbacks = self.ctx.fallbacks
            try:
                await stream_with_retry(self.ctx.llm, self.messages, tokens_tx)
                fallbacks.success()
            except LLMError as exc:
                await self._error(ev.llm_error(exc.kind.value), exc.message)
                if not self._spoken:
                    await tokens_tx.send(fallbacks.message_for(exc.kind))

    async def _produce_text(
        self, tokens_rx: trio.MemoryReceiveChannel[str], text_tx: trio.MemorySendChannel[str]
    ) -> None:
        chunker = SemanticChunker()
        async with text_tx, tokens_rx:
            async for delta in tokens_rx:
                if self.timings.llm_first_token is None:
                    self.timings.llm_first_token = trio.current_time()
                for chunk in chunker.feed(delta):
                    await self._emit_text(chunk, text_tx)
            for chunk in chunker.flush():
                await self._emit_text(chunk, text_tx)

    async def _emit_text(self, chunk: str, text_tx: trio.MemorySendChannel[str]) -> None:
        self._spoken.append(chunk)
        await self.ctx.out.send(ResponseText(self.utterance_id, chunk))
        # If the TTS failed, the answer continues as text only.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await text_tx.send(chunk)

    async def _synthesize(
        self, text_rx: trio.MemoryReceiveChannel[str], audio_tx: trio.MemorySendChannel[TTSEvent]
    ) -> None:
        async with text_rx, audio_tx:
            if self.conn is None:
                async for _ in text_rx:
                    pass
                return
            try:
                settings = self.ctx.settings
                await self.conn.synthesize(
                    self.utterance_id,
                    text_rx,
                    audio_tx,
                    voice_id=settings.voice_id,
                    language=settings.language,
                )
            except TTSError as exc:
                report(self.ctx.tts.name, "synthesis")
                self._tts_ok = False
                await self._error(ev.ERR_TTS, str(exc))

    async def _play(self, audio_rx: trio.MemoryReceiveChannel[TTSEvent]) -> None:
        settings = self.ctx.settings
        await play(
            audio_rx,
            self.ctx.out,
            self.playback,
            source_rate=self.ctx.tts.sample_rate if self.conn is None else self.conn.sample_rate,
            lead=settings.playback_lead,
            chunk_ms=settings.output_chunk_ms,
            on_first_audio=self._first_audio,
            on_tts_audio=self._first_tts_audio,
            on_late=functools.partial(self.ctx.meter.audio_late, "out"),
            control=self.control,
        )

    async def _first_audio(self) -> None:
        now = trio.current_time()
        self.timings.first_audio_sent = now
        await self.ctx.inbox.send(AnswerAudible(now))
        await bot_speaking(self.ctx.audio_ctl, True)

    def _first_tts_audio(self) -> None:
        if self.timings.tts_first_audio is None:
            self.timings.tts_first_audio = trio.current_time()

    async def _error(self, code: str, message: str) -> None:
        log.warning("session %s: %s: %s", self.ctx.session_id, code, message)
        await self.ctx.out.send(ErrorEvent(code, message, "turn"))


async def bot_speaking(channel: trio.MemorySendChannel[BotSpeaking] | None, on: bool) -> None:
    """Tell the audio path; once the call's input side has ended nobody listens."""
    if channel is None:
        return
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await channel.send(BotSpeaking(on))


def _wall_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["Answer", "AnswerContext", "AnswerOutcome", "bot_speaking"]
