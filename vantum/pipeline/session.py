"""One call = one nursery of actors joined by bounded channels.

    ingress ─audio─► resample+VAD ─16k─► STT ─┐
       └──control─────────────────────────────┴─► turn manager ─requests─► responder
                                                     │                     │
    egress ◄──────────────events───────────────────────┴─────────────────────┘

Leaving the nursery ends every actor of the call; nothing outlives the connection.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Protocol

import attrs
import trio

from ..errors import ProtocolError
from ..limits import AudioRateGuard
from ..protocol import events as ev
from ..protocol.client_events import DtmfInput, InputChunk, InputEnd, InputStart, TextInput
from ..providers.base import Finalize, LLMEngine, STTEngine, STTInput, TTSEngine
from .audio_path import AudioItem, run_audio_path, run_stt
from .context import DEFAULT_SYSTEM_PROMPT, Conversation
from .messages import (
    AudioFormat,
    InputEnded,
    ModeChanged,
    ServerEvent,
    TextTurn,
    TurnInput,
    TurnRequest,
)
from .responder import Responder
from .state import NO_METER, AudioMeter, SessionState
from .transport import PeerGone, Transport
from .turns import TurnPolicy, run_turn_manager

log = logging.getLogger("vantum.session")


@attrs.frozen
class Engines:
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine


@attrs.frozen
class SessionOptions:
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    turn_policy: TurnPolicy = attrs.Factory(TurnPolicy)
    max_call_s: float | None = 3600.0
    """Calls are ended (close 1000 after a ``connection.lifecycle.max_duration`` event)
    when they last this long."""
    playback_lead: float = 0.2
    output_chunk_ms: int = 40
    request_queue: int = 10
    audio_rate_margin: float | None = 1.25
    """Audio faster than real time by more than this (after a 5 s lead) is dropped
    with an ``audio.error.rate_exceeded`` event; None disables the check."""
    audio_buffer: int = 50
    """Audio chunks ingress may queue before the session reports backpressure."""


class EventObserver(Protocol):
    """Sees every event the session sends (metrics, call records); must not block."""

    def on_event(self, event: ServerEvent) -> None: ...


async def run_session(
    transport: Transport,
    engines: Engines,
    options: SessionOptions = SessionOptions(),
    observer: EventObserver | None = None,
    meter: AudioMeter = NO_METER,
) -> None:
    """Serve one connected caller until they leave; returns when every actor is done."""
    state = SessionState(transport.session_id, meter=meter)
    out_tx, out_rx = trio.open_memory_channel[ServerEvent](32)
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](options.audio_buffer)
    stt_tx, stt_rx = trio.open_memory_channel[STTInput](32)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    req_tx, req_rx = trio.open_memory_channel[TurnRequest](options.request_queue)
    responder = Responder(
        engines.llm,
        engines.tts,
        Conversation(options.system_prompt),
        state,
        out_tx.clone(),
        lead=options.playback_lead,
        chunk_ms=options.output_chunk_ms,
    )

    await transport.send(ServerEvent(ev.CONNECTION_ACK, {"success": True}))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_egress, out_rx, transport, observer)
        nursery.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx.clone(), state)
        nursery.start_soon(run_stt, engines.stt, stt_rx, inbox_tx.clone(), out_tx.clone())
        nursery.start_soon(
            run_turn_manager, inbox_rx, out_tx.clone(), req_tx, state, options.turn_policy
        )
        nursery.start_soon(_run_responder, responder, req_rx, inbox_tx.clone())
        async with out_tx, inbox_tx, audio_tx:
            with trio.move_on_after(options.max_call_s or float("inf")) as call_timer:
                async with trio.open_nursery() as front:
                    front.start_soon(_hang_up_when_asked, state, front.cancel_scope)
                    await run_ingress(
                        transport, state, audio_tx, inbox_tx, out_tx, options.audio_rate_margin
                    )
                    front.cancel_scope.cancel()
        # The call is over (caller left, hang-up, or time limit): stop every actor.
        nursery.cancel_scope.cancel()
    # Every actor has stopped, so this is now the only writer to the connection.
    if call_timer.cancelled_caught:
        await _say_bye(
            transport, "connection.lifecycle.max_duration", "maximum call duration reached"
        )
    elif state.hangup.is_set():
        await _say_bye(
            transport, "connection.lifecycle.hangup", f"call ended: {state.hangup_reason}"
        )


async def _run_responder(
    responder: Responder,
    requests: trio.MemoryReceiveChannel[TurnRequest],
    inbox: trio.MemorySendChannel[TurnInput],
) -> None:
    async with responder.out:
        await responder.run(requests, inbox)


async def _hang_up_when_asked(state: SessionState, scope: trio.CancelScope) -> None:
    await state.hangup.wait()
    scope.cancel()


async def _say_bye(transport: Transport, event_type: str, message: str) -> None:
    with trio.move_on_after(1.0), contextlib.suppress(PeerGone):
        await transport.send(ServerEvent(event_type, {"message": message}))


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
    state: SessionState,
    audio: trio.MemorySendChannel[AudioItem],
    inbox: trio.MemorySendChannel[TurnInput],
    out: trio.MemorySendChannel[ServerEvent],
    rate_margin: float | None = 1.25,
) -> None:
    """Read frames until the peer leaves; bad frames get an error event, never a crash."""
    reported_backpressure = False
    guard: AudioRateGuard | None = None
    rate_reported_at = float("-inf")
    while True:
        try:
            item = await transport.receive()
        except PeerGone:
            return
        if isinstance(item, ProtocolError):
            await out.send(
                ServerEvent(
                    item.event_type, {"message": item.message}, request_type=item.request_type
                )
            )
            continue
        if isinstance(item, InputStart):
            if state.speaking and state.interrupt():
                log.info("session %s: caller started talking over the answer", state.session_id)
            fmt = AudioFormat(item.sampling_rate, item.turn_mode, item.silence_ms)
            if (state.client_rate, state.turn_mode) != (item.sampling_rate, item.turn_mode):
                await audio.send(fmt)
            state.client_rate = item.sampling_rate
            if guard is None and rate_margin is not None:
                guard = AudioRateGuard(item.sampling_rate, margin=rate_margin, window_s=5.0)
            if guard is not None:
                guard.set_sample_rate(item.sampling_rate)
            state.language = item.language
            state.voice_id = item.voice_id
            state.turn_mode = item.turn_mode
            await inbox.send(ModeChanged(item.turn_mode, item.language))
            await out.send(_ack(ev.INPUT_START, item.event_id))
        elif isinstance(item, InputChunk):
            if state.client_rate is None:
                message = "audio.input.chunk before audio.input.start"
                await out.send(_chunk_error(ev.ERR_NOT_STARTED, message))
                continue
            if guard is not None and not guard.accept(len(item.audio) // 2, trio.current_time()):
                seconds = len(item.audio) / 2 / state.client_rate
                state.meter.audio_dropped("in", "rate_limit", seconds)
                if trio.current_time() - rate_reported_at >= 5.0:  # at most every 5 s
                    rate_reported_at = trio.current_time()
                    message = "audio arrives faster than real time; chunks dropped"
                    await out.send(_chunk_error(ev.ERR_RATE, message))
                continue
            pcm = bytes(len(item.audio)) if item.is_muted else item.audio
            try:
                audio.send_nowait(pcm)
            except trio.WouldBlock:
                if not reported_backpressure:
                    reported_backpressure = True
                    log.warning("session %s: audio path behind real time", state.session_id)
                    message = "audio processing is behind real time; input is slowed"
                    await out.send(_chunk_error(ev.ERR_BACKPRESSURE, message))
                blocked_at = trio.current_time()
                await audio.send(pcm)
                state.meter.audio_late("in", trio.current_time() - blocked_at)
        elif isinstance(item, InputEnd):
            await out.send(_ack(ev.INPUT_END, item.event_id))
            if state.client_rate is None:
                continue
            await inbox.send(InputEnded(trio.current_time()))
            await audio.send(Finalize())
        elif isinstance(item, TextInput):
            await inbox.send(TextTurn(item.text, trio.current_time()))
        elif isinstance(item, DtmfInput):
            await out.send(ServerEvent(ev.DTMF, {"digit": item.digit}))
            text = f"(The caller pressed {item.digit} on the keypad.)"
            await inbox.send(TextTurn(text, trio.current_time()))


def _chunk_error(event_type: str, message: str) -> ServerEvent:
    return ServerEvent(event_type, {"message": message}, request_type=ev.INPUT_CHUNK)


def _ack(event_type: str, event_id: str) -> ServerEvent:
    return ServerEvent(event_type, {"success": True}, event_id=event_id)
