"""One call = one nursery of actors joined by bounded channels.

    ingress ─audio─► resample+VAD ─16k─► STT ─┐
       └──control─────────────────────────────┴─► turn manager ─commands─► responder
                                                     │  ▲                    │ │
    egress ◄──────────────events───────────────────────┘  └──ResponseFinished─┘ │
                                                                               ▼
                                                             (BotSpeaking → audio path)

The call has an *input side* (ingress, audio path, STT), which ends by being
cancelled — a socket read cannot be closed from our end — and an *output side*
(turn manager, responder, egress), which ends by closing: once the input side is
gone the session tells the turn manager ``CallOver``; it closes its command channel,
the responder finishes (after a hang-up: the goodbye) and closes its channels, and
egress sends what is already queued and returns at ``EndOfChannel``. Only if that
takes longer than ``drain_s`` is the output side cancelled. Nothing outlives the
connection.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Protocol

import attrs
import trio

from ..errors import ProtocolError, VantumError
from ..limits import AudioRateGuard
from ..protocol import events as ev
from ..protocol.client_events import (
    DtmfInput,
    InputChunk,
    InputEnd,
    InputStart,
    PlaybackProgress,
    TextInput,
)
from ..providers.base import Finalize, LLMEngine, S2SEngine, STTEngine, TTSEngine
from ..tools.base import CallControl, ToolEnv
from .audio_path import run_audio_path
from .context import Conversation
from .events import (
    CallEnded,
    DtmfReceived,
    ErrorEvent,
    InputAcknowledged,
    ServerEvent,
    SessionReady,
)
from .messages import (
    AudioItem,
    CallOver,
    CallOverReason,
    HangUp,
    InputEnded,
    InputStarted,
    ResponderCommand,
    SttItem,
    TextTurn,
    TurnInput,
)
from .meter import NO_METER, AudioMeter
from .responder import Responder
from .settings import CallSettings
from .stt_supervisor import run_stt
from .transport import PeerGone, Transport
from .turns import run_turn_manager

log = logging.getLogger("vantum.session")


@attrs.frozen
class Engines:
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine
    s2s: S2SEngine | None = None
    """Set: calls run in speech-to-speech mode (``pipeline/s2s_session.py``) instead of
    the cascade (``VANTUM_ENGINE=s2s``; docs/s2s.md)."""


class EventObserver(Protocol):
    """Sees every event the session sends (metrics, call records); must not block."""

    def on_event(self, event: ServerEvent) -> None: ...


DRAIN_S = 5.0
"""How long the output side may take to send what is queued once the call is over."""

HANG_UP_S = 5.0
"""How long the carrier's hang-up request (after ``end_call``) may take."""

DEFAULT_SETTINGS = CallSettings()


async def run_session(
    transport: Transport,
    engines: Engines,
    settings: CallSettings = DEFAULT_SETTINGS,
    observer: EventObserver | None = None,
    meter: AudioMeter = NO_METER,
    *,
    drain_s: float = DRAIN_S,
    tool_env: ToolEnv | None = None,
) -> None:
    """Serve one connected caller until they leave; returns when every actor is done.

    ``settings`` are the call's settings at admission; the caller's
    ``audio.input.start`` replaces them as the call goes on. ``tool_env``: what the
    agent's tools run with (None: no tools); its call control, when the carrier has
    one, also completes the call after the agent's ``end_call``.
    """
    out_tx, out_rx = trio.open_memory_channel[ServerEvent](32)
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](settings.audio_buffer)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](32)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    commands_tx, commands_rx = trio.open_memory_channel[ResponderCommand](16)
    hangup_tx, hangup_rx = trio.open_memory_channel[HangUp](1)
    responder = Responder(
        engines.llm,
        engines.tts,
        Conversation(settings.system_prompt),
        settings,
        out_tx.clone(),
        inbox_tx.clone(),
        audio_tx.clone(),
        meter,
        transport.session_id,
        tool_env=tool_env,
    )
    hung_up: list[HangUp] = []

    async def hang_up_when_asked(front: trio.CancelScope) -> None:
        async with hangup_rx:
            async for request in hangup_rx:
                hung_up.append(request)
                front.cancel()
                return

    await transport.send(SessionReady())
    ending: CallOverReason = "peer_gone"
    async with trio.open_nursery() as back:
        back.start_soon(run_egress, out_rx, transport, observer)
        back.start_soon(
            run_turn_manager, inbox_rx, out_tx.clone(), commands_tx, hangup_tx, settings
        )
        back.start_soon(responder.run, commands_rx)
        async with out_tx, inbox_tx:
            with trio.move_on_after(settings.max_call_s or float("inf")) as call_timer:
                async with trio.open_nursery() as front:
                    front.start_soon(hang_up_when_asked, front.cancel_scope)
                    front.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx.clone(), settings)
                    stt = functools.partial(run_stt, language=settings.language)
                    front.start_soon(stt, engines.stt, stt_rx, inbox_tx.clone(), out_tx.clone())
                    async with audio_tx:
                        await run_ingress(
                            transport, settings, audio_tx, inbox_tx.clone(), out_tx.clone(), meter
                        )
                    front.cancel_scope.cancel()
            if call_timer.cancelled_caught:
                ending = "max_duration"
            elif hung_up:
                ending = "hangup"
            # The output side now ends by closing, in order; this bounds it (and the
            # send below: a caller who stops reading can back everything up to here).
            back.cancel_scope.deadline = trio.current_time() + drain_s
            await inbox_tx.send(CallOver(ending))
    # Every actor has stopped, so this is now the only writer to the connection.
    if ending == "max_duration":
        await _say_bye(transport, CallEnded("max_duration", "maximum call duration reached"))
    elif hung_up:
        await _say_bye(transport, CallEnded("hangup", f"call ended: {hung_up[0].reason}"))
        control = tool_env.control if tool_env is not None else None
        if control is not None and hung_up[0].reason == "end_call":
            await _hang_up_carrier(control, transport.session_id)


async def _hang_up_carrier(control: CallControl, session_id: str) -> None:
    """Closing a phone stream does not end the phone call: the carrier must be told.
    A failure is logged, never raised: the session is over either way."""
    with trio.move_on_after(HANG_UP_S) as timer:
        try:
            await control.hang_up()
        except VantumError as exc:
            log.warning("session %s: carrier hang-up failed: %s", session_id, exc)
    if timer.cancelled_caught:
        log.warning("session %s: carrier hang-up timed out", session_id)


async def _say_bye(transport: Transport, event: CallEnded) -> None:
    with trio.move_on_after(1.0), contextlib.suppress(PeerGone):
        await transport.send(event)


async def run_egress(
    events: trio.MemoryReceiveChannel[ServerEvent],
    transport: Transport,
    observer: EventObserver | None = None,
) -> None:
    """The only writer to the connection, so frames leave in the order actors sent them."""
    async with events:
        async for event in events:
            if observer is not None:
                observer.on_event(event)
            try:
                await transport.send(event)
            except PeerGone:
                break
        # The caller is gone, but actors may still be finishing a sentence until the
        # session notices and cancels them: swallow their events rather than break
        # their channel (a BrokenResourceError would crash the whole session).
        async for _ in events:
            pass


async def run_ingress(
    transport: Transport,
    settings: CallSettings,
    audio: trio.MemorySendChannel[AudioItem],
    inbox: trio.MemorySendChannel[TurnInput],
    out: trio.MemorySendChannel[ServerEvent],
    meter: AudioMeter = NO_METER,
) -> None:
    """Read frames until the peer leaves; bad frames get an error event, never a crash.

    Ingress validates and routes; it decides nothing about turns. A new
    ``audio.input.start`` becomes new settings, sent in band to the audio path and
    the turn manager (which decides whether it interrupts the answer).
    """
    reported_backpressure = False
    guard: AudioRateGuard | None = None
    rate_reported_at = float("-inf")
    async with inbox, out:
        while True:
            try:
                item = await transport.receive()
            except PeerGone:
                return
            if isinstance(item, ProtocolError):
                error = ErrorEvent(
                    item.event_type,
                    item.message,
                    item.request_type,
                    event_id=item.event_id,
                    session_id=item.session_id,
                )
                await out.send(error)
            elif isinstance(item, InputStart):
                settings = settings.with_input_start(item)
                margin = settings.audio_rate_margin
                if guard is None and margin is not None:
                    guard = AudioRateGuard(item.sampling_rate, margin=margin, window_s=5.0)
                if guard is not None:
                    guard.set_sample_rate(item.sampling_rate)
                await audio.send(settings)
                await inbox.send(InputStarted(settings, trio.current_time()))
                await out.send(InputAcknowledged("audio.input.start", item.event_id, item.name))
            elif isinstance(item, InputChunk):
                rate = settings.sample_rate
                if rate is None:
                    message = "audio.input.chunk before audio.input.start"
                    await out.send(_chunk_error(ev.ERR_NOT_STARTED, message, item))
                    continue
                if guard is not None and not guard.accept(
                    len(item.audio) // 2, trio.current_time()
                ):
                    meter.audio_dropped("in", "rate_limit", len(item.audio) / 2 / rate)
                    if trio.current_time() - rate_reported_at >= 5.0:  # at most every 5 s
                        rate_reported_at = trio.current_time()
                        message = "audio arrives faster than real time; chunks dropped"
                        await out.send(_chunk_error(ev.ERR_RATE, message, item))
                    continue
                pcm = bytes(len(item.audio)) if item.is_muted else item.audio
                try:
                    audio.send_nowait(pcm)
                except trio.WouldBlock:
                    if not reported_backpressure:
                        reported_backpressure = True
                        log.warning("session %s: audio path behind real time", transport.session_id)
                        message = "audio processing is behind real time; input is slowed"
                        await out.send(_chunk_error(ev.ERR_BACKPRESSURE, message, item))
                    blocked_at = trio.current_time()
                    await audio.send(pcm)
                    meter.audio_late("in", trio.current_time() - blocked_at)
            elif isinstance(item, InputEnd):
                await out.send(InputAcknowledged("audio.input.end", item.event_id, item.name))
                if settings.sample_rate is None:
                    continue
                await inbox.send(InputEnded(trio.current_time()))
                await audio.send(Finalize())
            elif isinstance(item, TextInput):
                await inbox.send(TextTurn(item.text, trio.current_time()))
            elif isinstance(item, DtmfInput):
                await out.send(DtmfReceived(item.digit))
                text = f"(The caller pressed {item.digit} on the keypad.)"
                await inbox.send(TextTurn(text, trio.current_time()))
            elif isinstance(item, PlaybackProgress):
                await inbox.send(item)


def _chunk_error(code: str, message: str, chunk: InputChunk) -> ErrorEvent:
    """An error caused by ``chunk`` (it echoes the chunk's name and id)."""
    return ErrorEvent(code, message, chunk.name, event_id=chunk.event_id)
