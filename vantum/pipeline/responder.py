"""The responder: speaks the answers the turn manager hands it, one at a time.

It is two tasks. The *reader* takes the turn manager's commands in order and never
waits on anything else, so the turn manager can never block on it: an answer to
speak goes to the *speaker*; new settings apply from the next answer; an
``Interrupt`` cancels the answer in progress (a barge-in is its cancel scope); a
``Pause`` holds its audio at once and a ``Resume`` continues it (its player's
:class:`~.player.PlayerControl`); the carrier's playback reports are kept for the
history. The *speaker* runs each
:class:`~.answer.Answer`, keeps the conversation, and reports back to the turn
manager (``ResponseFinished``) and the caller (``audio.output.cancel``,
``conversation.response.complete``, ``metrics.turn``).

What enters the history after a barge-in is what the caller heard: the carrier's
confirmation when the transport has one (Twilio marks), otherwise the player's
clock. Because marks of the cleared audio come back after the barge-in, that entry
is settled when the next answer starts, not at the moment of the cut.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack

import attrs
import trio

from ..agent_spec import AgentSpec
from ..errors import ConfigError, TTSError
from ..protocol import events as ev
from ..protocol.client_events import PlaybackProgress
from ..providers.base import ChatMessage, LLMEngine, TTSConnection, TTSEngine
from ..providers.llm_retry import FallbackMessages
from ..providers.reporting import report
from ..tools.base import ToolEnv, ToolRunner
from ..tools.mcp_tools import open_mcp_tools
from ..tools.toolbox import NO_TOOLBOX, ToolBox
from .answer import Answer, AnswerContext, AnswerOutcome, bot_speaking
from .context import Conversation
from .events import ErrorEvent, OutputCancelled, ResponseComplete, ServerEvent
from .messages import (
    BotSpeaking,
    EndCallRequested,
    Interrupt,
    Pause,
    ResponderCommand,
    ResponseFinished,
    Resume,
    TurnInput,
    TurnRequest,
)
from .meter import NO_METER, AudioMeter
from .player import PlayerControl
from .settings import CallSettings

log = logging.getLogger("vantum.responder")


@attrs.frozen
class _Unsettled:
    """An interrupted answer whose heard part waits for the carrier's last word."""

    outcome: AnswerOutcome
    clock_heard_s: float


@attrs.define(eq=False)
class Responder:
    llm: LLMEngine
    tts: TTSEngine
    conversation: Conversation
    settings: CallSettings
    """For the next answer (the reader replaces it; an answer keeps the one it began with)."""
    out: trio.MemorySendChannel[ServerEvent]
    inbox: trio.MemorySendChannel[TurnInput]
    audio_ctl: trio.MemorySendChannel[BotSpeaking] | None = None
    meter: AudioMeter = NO_METER
    session_id: str = ""
    fallbacks: FallbackMessages = attrs.Factory(FallbackMessages)
    tool_env: ToolEnv | None = None
    """None: the call's agent gets no tools (nothing to sign or control them with)."""
    _toolbox: tuple[AgentSpec | None, ToolBox] = (None, NO_TOOLBOX)
    _mcp: list[ToolRunner] = attrs.Factory(list)
    """The tools of the call's MCP servers (connected once, for the whole call)."""
    _current: Answer | None = None
    _control: PlayerControl | None = None
    """The pause switch of the answer last handed over, from the moment the reader
    takes it (a pause may come before its TTS is even connected)."""
    _progress: dict[str, PlaybackProgress] = attrs.Factory(dict)
    _unsettled: _Unsettled | None = None

    async def run(self, commands: trio.MemoryReceiveChannel[ResponderCommand]) -> None:
        """Serve ``commands`` until the turn manager closes them; closes every channel
        it was given on the way out."""
        work_tx, work_rx = trio.open_memory_channel[tuple[TurnRequest, PlayerControl]](1)
        async with AsyncExitStack() as channels:
            for channel in (commands, self.out, self.inbox, self.audio_ctl):
                if channel is not None:
                    await channels.enter_async_context(channel)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._speak_all, work_rx)
                async with work_tx:
                    async for command in commands:
                        if isinstance(command, TurnRequest):
                            # The turn manager hands over the next answer only after the
                            # previous one finished, so this never waits.
                            self._control = PlayerControl()
                            await work_tx.send((command, self._control))
                        elif isinstance(command, CallSettings):
                            self.settings = command
                        elif isinstance(command, Interrupt):
                            self._interrupt(command)
                        elif isinstance(command, Pause | Resume):
                            self._pause(command)
                        else:
                            self._progress[command.utterance_id] = command

    def _interrupt(self, command: Interrupt) -> None:
        answer = self._current
        if answer is None or answer.scope.cancel_called:
            return
        log.info(
            "session %s: answer %s interrupted (%s)",
            self.session_id,
            answer.utterance_id,
            command.reason,
        )
        if command.reason == "call_ended":
            answer.cancel_reason = "call_ended"
        answer.scope.cancel()

    def _pause(self, command: Pause | Resume) -> None:
        """Hold or release the answer last handed over (one that is already over
        ignores it: the next answer gets a switch of its own)."""
        control = self._control
        if control is None:
            return
        log.info("session %s: answer %s", self.session_id, type(command).__name__.lower())
        if isinstance(command, Pause):
            control.pause()
        else:
            control.resume()

    async def _speak_all(
        self, requests: trio.MemoryReceiveChannel[tuple[TurnRequest, PlayerControl]]
    ) -> None:
        """Answer requests in order; (re)connect the TTS lazily so a TTS outage only
        mutes, and at a new rate when the caller's changed."""
        async with requests, AsyncExitStack() as mcp, AsyncExitStack() as stack:
            await self._open_mcp(mcp)
            conn: TTSConnection | None = None
            conn_rate: int | None = None
            async for request, control in requests:
                settings = self.settings
                if conn is not None and conn_rate != settings.output_rate:
                    await stack.aclose()
                    conn = None
                if conn is None:
                    try:
                        tts = self.tts.connect(sample_rate=settings.output_rate)
                        conn = await stack.enter_async_context(tts)
                        conn_rate = settings.output_rate
                    except TTSError as exc:
                        report(self.tts.name, "connect")
                        await self._error(ev.ERR_TTS, f"TTS unavailable: {exc}")
                outcome = await self._answer(conn, request, settings, control)
                if outcome.end_call:
                    await self.inbox.send(EndCallRequested())
                await self.inbox.send(ResponseFinished(trio.current_time(), outcome.interrupted))
                if not outcome.tts_ok:
                    await stack.aclose()
                    conn = None

    async def _answer(
        self,
        conn: TTSConnection | None,
        request: TurnRequest,
        settings: CallSettings,
        control: PlayerControl,
    ) -> AnswerOutcome:
        self._settle()
        messages = self.conversation.messages()
        if not request.canned:
            messages.append(ChatMessage("user", request.text))
        ctx = AnswerContext(
            self.llm,
            self.tts,
            settings,
            self.out,
            self.inbox,
            self.audio_ctl,
            self.meter,
            self.fallbacks,
            self.session_id,
        )
        if settings.agent is not None and self.tool_env is not None:
            ctx.agent = settings.agent
            ctx.toolbox = await self._toolbox_for(settings.agent, self.tool_env)
            ctx.control = self.tool_env.control
            ctx.call_id = self.tool_env.call_id
            ctx.phone = self.tool_env.phone
        answer = Answer(
            ctx,
            conn,
            messages,
            request.timings,
            canned_text=request.text if request.canned else None,
            gate=request.gate,
            control=control,
        )
        self._current = answer
        try:
            outcome = await answer.run()
        finally:
            self._current = None
        playback = outcome.playback
        if playback.started_at is not None:
            await bot_speaking(self.audio_ctl, False)
        if outcome.dropped:
            return outcome
        if not request.canned:
            self.conversation.add_user(request.text)
        for message in outcome.tool_messages:
            self.conversation.add(message)
        if outcome.interrupted:
            heard = playback.heard_seconds(trio.current_time())
            # Sent and never played: past the clock, or dropped by the caller at a pause.
            unplayed = playback.sent_seconds - heard + playback.withdrawn_seconds
            if unplayed > 0:
                self.meter.audio_dropped("out", "barge_in", unplayed)
            if playback.started_at is not None:
                await self.out.send(OutputCancelled(outcome.utterance_id, answer.cancel_reason))
            self._unsettled = _Unsettled(outcome, heard)
        else:
            self._progress.clear()
            if outcome.spoken:
                self.conversation.add_assistant(outcome.spoken)
        await self.out.send(ResponseComplete(outcome.utterance_id))
        metrics = request.timings.metrics(
            outcome.utterance_id, playback.underruns, playback.late_seconds
        )
        await self.out.send(metrics)
        return outcome

    async def _open_mcp(self, stack: AsyncExitStack) -> None:
        """Connect the agent's MCP servers for this call (in this task: the SDK's
        clients are task-bound context managers). A failure is reported once; the
        agent then answers with its other tools."""
        agent = self.settings.agent
        if agent is None or not agent.mcp_servers or self.tool_env is None:
            return
        try:
            self._mcp = await stack.enter_async_context(open_mcp_tools(agent.mcp_servers))
        except ConfigError as exc:
            await self._error(ev.ERR_TOOLS, f"agent {agent.name}: {exc}")

    async def _toolbox_for(self, agent: AgentSpec, env: ToolEnv) -> ToolBox:
        """The agent's tools, built once per agent value; an agent whose tools cannot
        be loaded answers without them (and says why once)."""
        cached_for, toolbox = self._toolbox
        if cached_for is agent:
            return toolbox
        try:
            toolbox = ToolBox.for_agent(agent, env.secret, extra=self._mcp)
        except ConfigError as exc:
            toolbox = NO_TOOLBOX
            await self._error(ev.ERR_TOOLS, f"agent {agent.name}: tools unavailable: {exc}")
        self._toolbox = (agent, toolbox)
        return toolbox

    def _settle(self) -> None:
        """Enter the last interrupted answer's heard part into the history."""
        unsettled, self._unsettled = self._unsettled, None
        if unsettled is None:
            return
        outcome = unsettled.outcome
        heard = unsettled.clock_heard_s
        confirmed = self._progress.get(outcome.utterance_id)
        if confirmed is not None:
            played = confirmed.played_ms / 1000
            heard = outcome.playback.sent_seconds if confirmed.finished else played
        self._progress.clear()
        text = outcome.playback.heard_text(heard, outcome.spoken)
        if text:
            self.conversation.add_assistant(text)

    async def _error(self, code: str, message: str) -> None:
        log.warning("session %s: %s: %s", self.session_id, code, message)
        await self.out.send(ErrorEvent(code, message, "turn"))


__all__ = ["Responder"]
