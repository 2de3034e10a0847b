"""One call in speech-to-speech mode: one S2S engine in place of STT → LLM → TTS.

    ingress ─audio─► uplink (resample to 24 kHz) ─commands─► S2S connection
       └─control──► conductor ◄──────────────events──────────────┘
                       │ answers (one per provider response, in order)
                       ▼
                    speaker ── one answer at a time: player (pacing, resample) ─► egress

What stays Vantum's in this mode, by construction:

- **The floor.** The provider's VAD hears the caller (auto turns) and cancels its own
  response; the conductor then cancels the answer's scope — and sends *no*
  ``response.cancel``, which would hit the next answer or fail. Manual turns: the
  uplink commits at ``audio.input.end`` and the conductor asks for the answer.
- **What was heard.** The player paces the audio as in the cascade, so at a barge-in
  the answer knows how much was played; its :class:`ResponseTracker` turns that into
  truncations and deletions of the provider's items (never past the audio produced,
  never at 0 ms), and the history, the client and the call record get Vantum's own
  heard text (``conversation.response.text`` is sent once the answer is over).
- **Tools** run from the same registry (:class:`~vantum.tools.toolbox.ToolBox`) under
  the answer's scope; their results are sent and the next answer requested only once
  the response that called them is done (so never ``conversation_already_has_active_
  response`` of our own making).
- **Long calls.** The engine replaces its provider session before the cap and replays
  the history the conductor gives it (:class:`~vantum.providers.base.S2SRemember`).

The input side (ingress, uplink) is cancelled at the end of the call, the output side
closes, as in :mod:`.session`.
"""

from __future__ import annotations

import contextlib
import logging
import time

import attrs
import trio

from ..audio.resample import StreamResampler
from ..errors import VantumError
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..providers.base import (
    S2S_SAMPLE_RATE,
    ChatMessage,
    Finalize,
    S2SAddText,
    S2SAnswerAudio,
    S2SAnswerDone,
    S2SAnswerItem,
    S2SAnswerItemDone,
    S2SAnswerStarted,
    S2SAnswerText,
    S2SAudioIn,
    S2SCancel,
    S2SCommand,
    S2SCommit,
    S2SConnection,
    S2SDelete,
    S2SEngine,
    S2SEvent,
    S2SFailure,
    S2SReconnected,
    S2SRemember,
    S2SRespond,
    S2SSetup,
    S2SSpeechStarted,
    S2SSpeechStopped,
    S2SToolResult,
    S2STruncate,
    S2SUpdate,
    S2SUserTranscript,
    ToolCall,
    TTSAudio,
    TTSEvent,
)
from ..providers.realtime.codec import ItemTruncate
from ..providers.realtime.tracker import ResponseTracker
from ..tools.base import ToolContext, ToolEnv, ToolResult
from ..tools.toolbox import NO_TOOLBOX, ToolBox
from .context import Conversation
from .events import (
    CallEnded,
    CancelReason,
    ErrorEvent,
    OutputCancelled,
    ResponseComplete,
    ResponseStarted,
    ResponseText,
    ServerEvent,
    SessionReady,
    ToolCalled,
    ToolFinished,
    TranscriptFinal,
    TranscriptInterim,
    TurnMetrics,
)
from .heard import heard_text
from .messages import AudioItem, CallOver, CallOverReason, InputStarted, TextTurn, TurnInput
from .meter import NO_METER, AudioMeter
from .player import Playback, play
from .session import DEFAULT_SETTINGS, DRAIN_S, EventObserver, _say_bye, run_egress, run_ingress
from .settings import CallSettings
from .transport import Transport

log = logging.getLogger("vantum.s2s")

ANSWER_EVENTS = 4096
"""Events one answer may hold while it waits to be played: the provider generates
audio faster than real time and its socket must be read at once (a barge-in arrives
behind the audio), so an answer buffers its response — up to this many deltas (minutes
of audio at the provider's delta sizes); past it audio is dropped and logged."""
ANSWERS_QUEUED = 8
CUT_TIMEOUT_S = 1.0


@attrs.frozen
class TurnEnd:
    """Manual turns: the uplink committed the caller's audio (after the last of it)."""

    at: float


@attrs.frozen
class AnswerOver:
    """An answer is over: what the caller heard of it, for the history."""

    utterance_id: str
    heard: str
    tool_messages: tuple[ChatMessage, ...]


ConductorInput = TurnInput | S2SEvent | TurnEnd | AnswerOver


def setup_for(settings: CallSettings, toolbox: ToolBox) -> S2SSetup:
    return S2SSetup(
        instructions=settings.system_prompt,
        voice=settings.voice_id,
        tools=toolbox.schemas,
        auto_turns=settings.turn_mode == "auto",
        silence_ms=settings.silence_ms,
        language=settings.language,
    )


@attrs.define(eq=False)
class CallContext:
    """What every answer of the call shares (read-only for them)."""

    conn: S2SConnection
    toolbox: ToolBox
    tool_env: ToolEnv | None
    session_id: str
    meter: AudioMeter


async def run_s2s_session(
    transport: Transport,
    engine: S2SEngine,
    settings: CallSettings = DEFAULT_SETTINGS,
    observer: EventObserver | None = None,
    meter: AudioMeter = NO_METER,
    *,
    drain_s: float = DRAIN_S,
    tool_env: ToolEnv | None = None,
) -> None:
    """Serve one caller with ``engine`` until they leave (the S2S twin of
    :func:`~.session.run_session`)."""
    toolbox = NO_TOOLBOX
    agent = settings.agent
    if agent is not None and agent.tools and tool_env is not None:
        try:
            toolbox = ToolBox.for_agent(agent, tool_env.secret)
        except VantumError as exc:
            log.warning("session %s: tools unavailable: %s", transport.session_id, exc)
    await transport.send(SessionReady())
    try:
        async with engine.connect(setup_for(settings, toolbox)) as conn:
            ctx = CallContext(conn, toolbox, tool_env, transport.session_id, meter)
            ending = await _serve(transport, ctx, settings, observer, meter, drain_s)
    except VantumError as exc:
        log.warning("session %s: s2s engine: %s", transport.session_id, exc)
        with trio.move_on_after(1), contextlib.suppress(Exception):
            await transport.send(ErrorEvent(ev.ERR_S2S, str(exc), "connect"))
        return
    if ending == "max_duration":
        await _say_bye(transport, CallEnded("max_duration", "maximum call duration reached"))


async def _serve(
    transport: Transport,
    ctx: CallContext,
    settings: CallSettings,
    observer: EventObserver | None,
    meter: AudioMeter,
    drain_s: float,
) -> CallOverReason:
    out_tx, out_rx = trio.open_memory_channel[ServerEvent](32)
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](settings.audio_buffer)
    inbox_tx, inbox_rx = trio.open_memory_channel[ConductorInput](64)
    speaker_tx, speaker_rx = trio.open_memory_channel[S2SAnswer](ANSWERS_QUEUED)
    conductor = Conductor(ctx, settings, out_tx.clone(), speaker_tx)
    ending: CallOverReason = "peer_gone"
    async with trio.open_nursery() as back:
        back.start_soon(run_egress, out_rx, transport, observer)
        back.start_soon(conductor.run, inbox_rx, inbox_tx.clone())
        back.start_soon(run_speaker, speaker_rx, out_tx.clone(), inbox_tx.clone())
        async with out_tx, inbox_tx:
            with trio.move_on_after(settings.max_call_s or float("inf")) as call_timer:
                async with trio.open_nursery() as front:
                    front.start_soon(run_uplink, audio_rx, ctx, inbox_tx.clone(), settings)
                    async with audio_tx:
                        await run_ingress(
                            transport, settings, audio_tx, inbox_tx.clone(), out_tx.clone(), meter
                        )
                    front.cancel_scope.cancel()
            if call_timer.cancelled_caught:
                ending = "max_duration"
            back.cancel_scope.deadline = trio.current_time() + drain_s
            await inbox_tx.send(CallOver(ending))
    return ending


async def run_uplink(
    audio: trio.MemoryReceiveChannel[AudioItem],
    ctx: CallContext,
    inbox: trio.MemorySendChannel[ConductorInput],
    settings: CallSettings,
) -> None:
    """Caller audio to the engine at 24 kHz; settings and manual turn ends in order."""
    resampler: StreamResampler | None = None
    if settings.sample_rate:
        resampler = StreamResampler(settings.sample_rate, S2S_SAMPLE_RATE)
    async with audio, inbox:
        async for item in audio:
            if isinstance(item, bytes):
                if resampler is not None:
                    pcm = resampler.process(item)
                    if pcm:
                        await ctx.conn.send(S2SAudioIn(pcm))
            elif isinstance(item, CallSettings):
                settings = item
                if item.sample_rate:
                    resampler = StreamResampler(item.sample_rate, S2S_SAMPLE_RATE)
                await ctx.conn.send(S2SUpdate(setup_for(settings, ctx.toolbox)))
            elif isinstance(item, Finalize) and settings.turn_mode != "auto":
                if resampler is not None and (tail := resampler.flush()):
                    await ctx.conn.send(S2SAudioIn(tail))
                await ctx.conn.send(S2SCommit())
                await inbox.send(TurnEnd(trio.current_time()))


async def run_speaker(
    answers: trio.MemoryReceiveChannel[S2SAnswer],
    out: trio.MemorySendChannel[ServerEvent],
    report: trio.MemorySendChannel[ConductorInput],
) -> None:
    """Plays the answers one at a time, in the order the provider started them."""
    async with answers, out, report:
        async for answer in answers:
            await answer.run(out, report)


@attrs.define(eq=False)
class Conductor:
    """The call's one owner of decisions in S2S mode: the floor, the answers, the history."""

    ctx: CallContext
    settings: CallSettings
    out: trio.MemorySendChannel[ServerEvent]
    speaker: trio.MemorySendChannel[S2SAnswer]
    history: Conversation = attrs.field(init=False)
    live: dict[str, S2SAnswer] = attrs.Factory(dict)
    """Answers whose response is still being generated, by response id."""
    playing: list[S2SAnswer] = attrs.Factory(list)
    """Answers handed to the speaker and not over."""
    turn_end_at: float | None = None
    awaiting_answer: bool = False
    """An answer was asked for and has not started: if the connection is replaced
    meanwhile, the request died with it and is made again on the new one."""

    def __attrs_post_init__(self) -> None:
        self.history = Conversation(self.settings.system_prompt)

    async def run(
        self,
        inbox: trio.MemoryReceiveChannel[ConductorInput],
        forward_to: trio.MemorySendChannel[ConductorInput],
    ) -> None:
        async with inbox, self.out, self.speaker:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._forward, forward_to)
                async for item in inbox:
                    if isinstance(item, CallOver):
                        reason: CancelReason = "call_ended"
                        for answer in self.playing:
                            answer.interrupt(reason)
                        break
                    await self._handle(item)
                nursery.cancel_scope.cancel()

    async def _forward(self, inbox: trio.MemorySendChannel[ConductorInput]) -> None:
        async with inbox:
            async for event in self.ctx.conn.events:
                await inbox.send(event)

    async def _send(self, command: S2SCommand) -> None:
        await self.ctx.conn.send(command)

    async def _handle(self, item: ConductorInput) -> None:
        now = trio.current_time()
        if isinstance(item, InputStarted):
            self.settings = item.settings
        elif isinstance(item, S2SSpeechStarted):
            if self.settings.turn_mode == "auto":
                # The provider cancelled its response itself (interrupt_response):
                # stop ours, and do not cancel again.
                self._barge_in()
        elif isinstance(item, S2SSpeechStopped):
            self.turn_end_at = now
        elif isinstance(item, TurnEnd):
            self.turn_end_at = item.at
            await self._new_turn()
        elif isinstance(item, TextTurn):
            self.turn_end_at = now
            await self._send(S2SAddText("user", item.text))
            self.history.add_user(item.text)
            await self._remember()
            await self._new_turn()
        elif isinstance(item, S2SUserTranscript):
            wall = int(time.time() * 1000)
            language = self.settings.language
            if item.is_final:
                await self.out.send(TranscriptFinal(item.text, 1.0, wall, language))
                if item.text:
                    self.history.add_user(item.text)
                    await self._remember()
            else:
                await self.out.send(TranscriptInterim(item.text, 1.0, wall, language))
        elif isinstance(item, S2SAnswerStarted):
            self.awaiting_answer = False
            answer = S2SAnswer(self.ctx, self.settings, item.response_id, self.turn_end_at)
            self.turn_end_at = None
            try:
                self.speaker.send_nowait(answer)
            except trio.WouldBlock:
                log.warning("session %s: too many answers queued", self.ctx.session_id)
                return
            self.live[item.response_id] = answer
            self.playing.append(answer)
        elif isinstance(item, S2SAnswerItem | S2SAnswerAudio | S2SAnswerText | S2SAnswerItemDone):
            answer_for = self.live.get(item.response_id)
            if answer_for is not None:
                answer_for.feed(item)
        elif isinstance(item, S2SAnswerDone):
            done_for = self.live.pop(item.response_id, None)
            if done_for is not None:
                done_for.feed(item)
                done_for.events_tx.close()
        elif isinstance(item, S2SFailure):
            await self.out.send(ErrorEvent(ev.ERR_S2S, item.message, "turn"))
        elif isinstance(item, S2SReconnected):
            log.info("session %s: s2s session replaced (%s)", self.ctx.session_id, item.reason)
            if self.awaiting_answer:
                await self._send(S2SRespond())  # answered from the replayed history
        elif isinstance(item, AnswerOver):
            self.playing = [a for a in self.playing if a.utterance_id != item.utterance_id]
            for message in item.tool_messages:
                self.history.add(message)
            if item.heard:
                self.history.add_assistant(item.heard)
            if item.heard or item.tool_messages:
                await self._remember()

    async def _new_turn(self) -> None:
        """A turn the pipeline ended (manual, typed): cut what plays, ask for the answer."""
        if self.live:
            await self._send(S2SCancel())  # manual turns: no provider VAD cancelled it
        self._barge_in()
        await self._send(S2SRespond())
        self.awaiting_answer = True

    def _barge_in(self) -> None:
        for answer in self.playing:
            answer.interrupt("barge_in")

    async def _remember(self) -> None:
        await self._send(S2SRemember(tuple(self.history.messages()[1:])))


@attrs.define(eq=False)
class S2SAnswer:
    """One provider response, played and cut by Vantum; ``scope`` is its barge-in switch."""

    ctx: CallContext
    settings: CallSettings
    response_id: str
    turn_end_at: float | None
    utterance_id: str = attrs.Factory(new_id)
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)
    cancel_reason: CancelReason = "barge_in"
    tracker: ResponseTracker = attrs.field(init=False)
    playback: Playback = attrs.field(init=False)
    events_tx: trio.MemorySendChannel[S2SEvent] = attrs.field(init=False)
    events_rx: trio.MemoryReceiveChannel[S2SEvent] = attrs.field(init=False)
    first_audio_at: float | None = None
    dropped: int = 0
    tool_messages: list[ChatMessage] = attrs.Factory(list)
    _results_sent: set[str] = attrs.Factory(set)
    _results: list[tuple[ToolCall, ToolResult]] = attrs.Factory(list)

    def __attrs_post_init__(self) -> None:
        self.tracker = ResponseTracker(self.response_id)
        self.playback = Playback(self.utterance_id, self.settings.output_rate)
        self.events_tx, self.events_rx = trio.open_memory_channel[S2SEvent](ANSWER_EVENTS)

    def feed(self, event: S2SEvent) -> None:
        """Called by the conductor, which must never wait on an answer."""
        try:
            self.events_tx.send_nowait(event)
        except trio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1:
                log.warning("session %s: answer longer than its buffer", self.ctx.session_id)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass  # the answer is over: what the provider still sends is not played

    def interrupt(self, reason: CancelReason) -> None:
        self.cancel_reason = reason
        self.scope.cancel()

    async def run(
        self,
        out: trio.MemorySendChannel[ServerEvent],
        report: trio.MemorySendChannel[ConductorInput],
    ) -> None:
        await out.send(ResponseStarted(self.utterance_id, int(time.time() * 1000)))
        with self.scope:
            async with trio.open_nursery() as nursery:
                audio_tx, audio_rx = trio.open_memory_channel[TTSEvent](8)
                nursery.start_soon(self._play, audio_rx, out)
                async with audio_tx:
                    done = await self._consume(audio_tx)
                if done is not None and done.calls and done.status == "completed":
                    await self._run_tools(done.calls, out)
        now = trio.current_time()
        if self.scope.cancelled_caught:
            text = await self._cut(now)
            if self.playback.started_at is not None:
                await out.send(OutputCancelled(self.utterance_id, self.cancel_reason))
            await self._send_results()  # a finished call's result still belongs in the history
        else:
            text = self.tracker.full_text()
        if text:
            await out.send(ResponseText(self.utterance_id, text))
        await out.send(ResponseComplete(self.utterance_id))
        v2v = None
        if self.first_audio_at is not None and self.turn_end_at is not None:
            v2v = round((self.first_audio_at - self.turn_end_at) * 1000, 1)
        await out.send(
            TurnMetrics(
                self.utterance_id,
                voice_to_voice_ms=v2v,
                underruns=self.playback.underruns,
                late_audio_ms=round(self.playback.late_seconds * 1000, 1),
            )
        )
        self.events_rx.close()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await report.send(AnswerOver(self.utterance_id, text, tuple(self.tool_messages)))

    async def _play(
        self, audio: trio.MemoryReceiveChannel[TTSEvent], out: trio.MemorySendChannel[ServerEvent]
    ) -> None:
        async def first_audio() -> None:
            self.first_audio_at = trio.current_time()

        await play(
            audio,
            out,
            self.playback,
            source_rate=S2S_SAMPLE_RATE,
            lead=self.settings.playback_lead,
            chunk_ms=self.settings.output_chunk_ms,
            on_first_audio=first_audio,
        )

    async def _consume(self, audio: trio.MemorySendChannel[TTSEvent]) -> S2SAnswerDone | None:
        async for event in self.events_rx:
            if isinstance(event, S2SAnswerAudio):
                self.tracker.add_audio(event.item_id, len(event.pcm) // 2)
                await audio.send(TTSAudio(event.pcm))
            else:
                done = self._track(event)
                if done is not None:
                    return done
        return None

    def _track(self, event: S2SEvent) -> S2SAnswerDone | None:
        if isinstance(event, S2SAnswerItem):
            self.tracker.add_item(event.item_id)
        elif isinstance(event, S2SAnswerAudio):
            self.tracker.add_audio(event.item_id, len(event.pcm) // 2)
        elif isinstance(event, S2SAnswerText):
            self.tracker.add_text(event.item_id, event.delta)
        elif isinstance(event, S2SAnswerItemDone):
            self.tracker.finish_item(event.item_id, event.transcript)
        elif isinstance(event, S2SAnswerDone):
            return event
        return None

    async def _cut(self, now: float) -> str:
        """Truncate/delete what the caller did not hear; return what they heard."""
        while True:  # what has arrived but was not played yet still counts as produced
            try:
                self._track(self.events_rx.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        heard_s = self.playback.heard_seconds(now)
        plan = self.tracker.plan_cut(heard_s)
        with trio.move_on_after(CUT_TIMEOUT_S):
            for cut in plan.cuts:
                command: S2SCommand
                if isinstance(cut, ItemTruncate):
                    command = S2STruncate(cut.item_id, cut.audio_end_ms)
                else:
                    command = S2SDelete(cut.item_id)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.ctx.conn.send(command)
        texts = [
            heard_text(
                h.transcript,
                h.heard_ms / 1000,
                (),
                audio_seconds=h.produced_s,
                synthesis_done=h.done,
            )
            for h in plan.heard
        ]
        return " ".join(t for t in texts if t)

    async def _run_tools(
        self, calls: tuple[ToolCall, ...], out: trio.MemorySendChannel[ServerEvent]
    ) -> None:
        """Run the calls side by side; then results, then the next answer — the response
        that made the calls is done by now (``S2SAnswerDone``)."""
        toolbox = self.ctx.toolbox
        agent = self.settings.agent
        env = self.ctx.tool_env
        ctx = ToolContext(
            (env.call_id if env is not None else "") or self.ctx.session_id,
            self.settings.variables or (agent.variables if agent is not None else {}),
            None,
            env.control if env is not None else None,
            agent.transfer_numbers if agent is not None else (),
        )
        results: dict[int, ToolResult] = {}

        async def run_one(index: int, call: ToolCall) -> None:
            await out.send(ToolCalled(call.id, call.name, call.arguments))
            started = trio.current_time()
            with trio.CancelScope(shield=not toolbox.interruptible(call.name)):
                result = await toolbox.run(call, ctx)
                results[index] = result
                self._results.append((call, result))
                duration = round((trio.current_time() - started) * 1000.0, 1)
                name = call.name if call.name in toolbox.runners else "unknown"
                await out.send(ToolFinished(call.id, name, result.ok, duration))

        async with trio.open_nursery() as nursery:
            for i, call in enumerate(calls):
                nursery.start_soon(run_one, i, call)
        await self._send_results()
        await self.ctx.conn.send(S2SRespond())

    async def _send_results(self) -> None:
        done = [(c, r) for c, r in self._results if c.id not in self._results_sent]
        if not done:
            return
        self.tool_messages.append(
            ChatMessage("assistant", "", tool_calls=tuple(c for c, _ in done))
        )
        self.tool_messages.extend(
            ChatMessage("tool", r.content, tool_call_id=c.id) for c, r in done
        )
        with trio.move_on_after(CUT_TIMEOUT_S):
            for call, result in done:
                self._results_sent.add(call.id)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await self.ctx.conn.send(S2SToolResult(call.id, result.content))


__all__ = ["Conductor", "S2SAnswer", "run_s2s_session", "setup_for"]
