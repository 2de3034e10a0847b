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
from collections.abc import Sequence

import attrs
import trio

from ..agent_spec import AgentSpec
from ..audio.dtmf import dtmf_audio
from ..errors import LLMError, TTSError
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..providers.base import (
    ChatMessage,
    LLMEngine,
    ToolCall,
    TTSAudio,
    TTSConnection,
    TTSEngine,
    TTSEvent,
    WordTimestamps,
)
from ..providers.llm_retry import FallbackMessages, stream_with_retry
from ..providers.reporting import report
from ..tools.base import CallControl, DtmfControl, ToolContext, ToolResult
from ..tools.toolbox import NO_TOOLBOX, ToolBox
from .chunker import MARKER, SemanticChunker
from .events import (
    CancelReason,
    ErrorEvent,
    ResponseStarted,
    ResponseText,
    ServerEvent,
    ToolCalled,
    ToolFinished,
    TransferRequested,
)
from .messages import AnswerAudible, BotSpeaking, SpeculationGate, TurnInput, TurnTimings
from .meter import AudioMeter
from .player import Playback, PlayerControl, play
from .settings import CallSettings

log = logging.getLogger("vantum.responder")

TONES = "\x00dtmf:"
"""Starts a token that is DTMF tones, not text (``send_dtmf`` in band): it travels
the answer's text channels in order with the words around it, the chunker never
sees it, and the TTS stage turns it into the tones' audio between two TTS contexts."""


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
    tool_messages: tuple[ChatMessage, ...] = ()
    """The tool rounds that ran (the assistant's calls, then their results), for the
    history: a cancelled interruptible call is left out, a finished one never is."""
    end_call: bool = False
    """The agent called ``end_call``: hang up once this answer (its goodbye) is over."""


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
    agent: AgentSpec | None = None
    toolbox: ToolBox = NO_TOOLBOX
    """Empty: the answer streams text exactly as without agents."""
    control: CallControl | None = None
    """The carrier's call control (Twilio REST); None on a browser call."""
    call_id: str = ""
    """What tools see as the call's id (Twilio: the CallSid; else the session id)."""
    phone: bool = False
    """A phone call: ``send_dtmf`` may press keys (as tones in this answer's audio
    unless ``control`` presses them out of band)."""

    @property
    def tones_in_band(self) -> bool:
        """Whether this answer's text may carry :data:`TONES` (only then does the TTS
        stage look for them): a phone call whose agent has ``send_dtmf`` and whose
        carrier cannot press keys out of band."""
        return (
            self.phone
            and "send_dtmf" in self.toolbox.runners
            and not isinstance(self.control, DtmfControl)
        )


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
    _tool_messages: list[ChatMessage] = attrs.Factory(list)
    _started: trio.Event = attrs.Factory(trio.Event)
    _end_call: bool = False

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
                self._started.set()
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
            tool_messages=tuple(self._tool_messages),
            end_call=self._end_call and not dropped,
        )

    async def _call_llm(self, tokens_tx: trio.MemorySendChannel[str]) -> None:
        async with tokens_tx:
            if self.canned_text is not None:
                await tokens_tx.send(self.canned_text)
                return
            fallbacks = self.ctx.fallbacks
            try:
                if self.ctx.toolbox and self.ctx.agent is not None:
                    await self._tool_rounds(self.ctx.toolbox, self.ctx.agent, tokens_tx)
                else:
                    await stream_with_retry(self.ctx.llm, self.messages, tokens_tx)
                fallbacks.success()
            except LLMError as exc:
                await self._error(ev.llm_error(exc.kind.value), exc.message)
                if not self._spoken:
                    await tokens_tx.send(fallbacks.message_for(exc.kind))

    async def _tool_rounds(
        self, toolbox: ToolBox, agent: AgentSpec, tokens_tx: trio.MemorySendChannel[str]
    ) -> None:
        """Stream, run the calls the model made, give it the results, stream again:
        at most ``agent.max_tool_rounds`` rounds of calls. What the model said before
        a call is spoken at once (and stays said); calls a model makes after the last
        round are not run."""
        messages = list(self.messages)
        rounds = 0
        while True:
            said: list[str] = []
            calls = await stream_with_retry(
                self.ctx.llm, messages, tokens_tx, tools=toolbox.schemas, said=said
            )
            if not calls:
                return
            # Not before the answer has started: a speculative guess must not act on
            # the world (a rejected one is cancelled here), and the client sees the
            # calls inside the answer, after conversation.response.start.
            await self._started.wait()
            if rounds >= agent.max_tool_rounds:
                log.warning(
                    "session %s: tool calls after %d rounds not run: %s",
                    self.ctx.session_id,
                    rounds,
                    ", ".join(c.name for c in calls),
                )
                return
            rounds += 1
            text = " ".join("".join(said).replace(MARKER, " ").split())
            if text:
                await tokens_tx.send(f" {MARKER} ")  # speak it now, not after the tools
            results = await self._run_tools(toolbox, agent, calls, tokens_tx)
            messages.append(ChatMessage("assistant", text, tool_calls=tuple(calls)))
            messages.extend(
                ChatMessage("tool", r.content, tool_call_id=c.id)
                for c, r in zip(calls, results, strict=True)
            )
            if any(r.action == "end_call" for r in results):
                self._end_call = True
                await tokens_tx.send(f" {MARKER} {agent.end_call_goodbye}")
                return

    async def _run_tools(
        self,
        toolbox: ToolBox,
        agent: AgentSpec,
        calls: Sequence[ToolCall],
        tokens_tx: trio.MemorySendChannel[str],
    ) -> list[ToolResult]:
        """Run one round's calls side by side; the filler is said once if they are slow.

        The round's messages enter the answer's history in ``finally``, so a barge-in
        that cancels the round still records the non-interruptible calls it finished.
        """
        results: dict[int, ToolResult] = {}

        async def say(text: str) -> None:
            await tokens_tx.send(f" {MARKER} {text} {MARKER} ")

        async def transfer(target: str) -> None:
            await self.ctx.out.send(TransferRequested(target))

        async def play_dtmf(digits: str) -> None:
            await tokens_tx.send(TONES + digits)

        ctx = ToolContext(
            self.ctx.call_id or self.ctx.session_id,
            self.ctx.settings.variables or agent.variables,
            say,
            self.ctx.control,
            agent.transfer_numbers,
            transfer,
            play_dtmf if self.ctx.tones_in_band else None,
        )

        async def filler() -> None:
            await trio.sleep(agent.filler_after_ms / 1000)
            if agent.filler:
                await say(agent.filler)

        try:
            async with trio.open_nursery() as outer:
                outer.start_soon(filler)
                async with trio.open_nursery() as nursery:
                    for i, call in enumerate(calls):
                        nursery.start_soon(self._run_tool, toolbox, ctx, i, call, results)
                outer.cancel_scope.cancel()
        finally:
            done = [(c, results[i]) for i, c in enumerate(calls) if i in results]
            if done:
                self._tool_messages.append(
                    ChatMessage("assistant", "", tool_calls=tuple(c for c, _ in done))
                )
                self._tool_messages.extend(
                    ChatMessage("tool", r.content, tool_call_id=c.id) for c, r in done
                )
        return [results[i] for i in range(len(calls))]

    async def _run_tool(
        self,
        toolbox: ToolBox,
        ctx: ToolContext,
        index: int,
        call: ToolCall,
        results: dict[int, ToolResult],
    ) -> None:
        name = call.name if call.name in toolbox.runners else "unknown"
        await self.ctx.out.send(ToolCalled(call.id, call.name, call.arguments))
        started = trio.current_time()
        # A non-interruptible tool finishes (within its timeout) and is reported even
        # if the caller barges in meanwhile; the answer's cancel lands right after.
        with trio.CancelScope(shield=not toolbox.interruptible(call.name)):
            result = await toolbox.run(call, ctx)
            results[index] = result
            duration = round((trio.current_time() - started) * 1000.0, 1)
            if not result.ok:
                log.info(
                    "session %s: tool %s failed: %s", self.ctx.session_id, call.name, result.error
                )
            await self.ctx.out.send(ToolFinished(call.id, name, result.ok, duration))

    async def _produce_text(
        self, tokens_rx: trio.MemoryReceiveChannel[str], text_tx: trio.MemorySendChannel[str]
    ) -> None:
        chunker = SemanticChunker()
        tones = self.ctx.tones_in_band
        async with text_tx, tokens_rx:
            async for delta in tokens_rx:
                if tones and delta.startswith(TONES):
                    # What was said before the keys is spoken before them.
                    for chunk in chunker.flush():
                        await self._emit_text(chunk, text_tx)
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await text_tx.send(delta)
                    continue
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
            if self.ctx.tones_in_band:
                await self._synthesize_with_tones(self.conn, text_rx, audio_tx)
                return
            await self._synthesize_context(self.conn, self.utterance_id, text_rx, audio_tx)

    async def _synthesize_context(
        self,
        conn: TTSConnection,
        context_id: str,
        text_rx: trio.MemoryReceiveChannel[str],
        audio_tx: trio.MemorySendChannel[TTSEvent],
    ) -> None:
        """One TTS context in the call's voice and language; a TTSError is reported
        to the caller as ``tts.error`` and the answer goes on without audio."""
        try:
            settings = self.ctx.settings
            await conn.synthesize(
                context_id,
                text_rx,
                audio_tx,
                voice_id=settings.voice_id,
                language=settings.language,
            )
        except TTSError as exc:
            report(self.ctx.tts.name, "synthesis")
            self._tts_ok = False
            await self._error(ev.ERR_TTS, str(exc))

    async def _synthesize_with_tones(
        self,
        conn: TTSConnection,
        text_rx: trio.MemoryReceiveChannel[str],
        audio_tx: trio.MemorySendChannel[TTSEvent],
    ) -> None:
        """Text between two ``send_dtmf`` tones is one TTS context; the tones' audio
        goes to the player after the audio of the words before them (``synthesize``
        returns only once the provider sent all of a context's audio), so speech,
        tones and speech play in the order they were asked for."""
        offset = 0.0  # seconds of this answer's audio so far
        segment = 0
        pending: str | None = None
        while True:
            first = pending
            if first is None:
                try:
                    first = await text_rx.receive()
                except trio.EndOfChannel:
                    return
            pending = None
            if first.startswith(TONES):
                pcm = dtmf_audio(first[len(TONES) :], conn.sample_rate)
                await audio_tx.send(TTSAudio(pcm))
                offset += len(pcm) / 2 / conn.sample_rate
                continue
            if not self._tts_ok:  # the TTS failed earlier: text only, tones still play
                continue
            context_id = self.utterance_id if segment == 0 else f"{self.utterance_id}-{segment}"
            segment += 1
            pending, offset = await self._speak_segment(
                conn, context_id, first, text_rx, audio_tx, offset
            )
            if pending is None:
                return

    async def _speak_segment(
        self,
        conn: TTSConnection,
        context_id: str,
        first: str,
        text_rx: trio.MemoryReceiveChannel[str],
        audio_tx: trio.MemorySendChannel[TTSEvent],
        offset: float,
    ) -> tuple[str | None, float]:
        """One TTS context: ``first`` and the text after it up to the next tones
        (returned, None at the end of the answer) and the answer's audio seconds after
        it. Word timings are moved by ``offset``, the audio before this context, so
        ``heard_text`` still lines them up with the answer's audio."""
        seg_tx, seg_rx = trio.open_memory_channel[str](8)
        seg_audio_tx, seg_audio_rx = trio.open_memory_channel[TTSEvent](32)
        start = offset
        tones: str | None = None

        async def relay() -> None:
            nonlocal offset
            async with seg_audio_rx:
                async for item in seg_audio_rx:
                    if isinstance(item, TTSAudio):
                        offset += len(item.pcm) / 2 / conn.sample_rate
                    elif start:
                        item = WordTimestamps(
                            item.words,
                            tuple(t + start for t in item.start),
                            tuple(t + start for t in item.end),
                        )
                    await audio_tx.send(item)

        async def speak() -> None:
            async with seg_audio_tx, seg_rx:
                await self._synthesize_context(conn, context_id, seg_rx, seg_audio_tx)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(relay)
            nursery.start_soon(speak)
            async with seg_tx:
                with contextlib.suppress(trio.BrokenResourceError):
                    await seg_tx.send(first)
                async for chunk in text_rx:
                    if chunk.startswith(TONES):
                        tones = chunk
                        break
                    with contextlib.suppress(trio.BrokenResourceError):
                        await seg_tx.send(chunk)
        return tones, offset

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
