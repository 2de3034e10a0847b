"""The responder: one spoken answer at a time, each inside its own cancel scope.

For every turn request it runs three actors in a nursery — LLM+chunker, TTS,
player — joined by bounded channels. Cancelling the answer's scope (barge-in,
hang-up) stops all three: the LLM stream is closed, the TTS context is cancelled
at the provider and unplayed audio is dropped.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from contextlib import AsyncExitStack

import attrs
import trio

from ..errors import LLMError, LLMErrorKind, TTSError
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..providers.base import ChatMessage, LLMEngine, TTSConnection, TTSEngine, TTSEvent
from ..providers.llm_retry import FallbackMessages, stream_with_retry
from ..providers.reporting import report
from .chunker import SemanticChunker
from .context import Conversation
from .messages import ResponseFinished, ServerEvent, TurnInput, TurnRequest
from .player import Playback, play
from .state import SessionState

log = logging.getLogger("vantum.responder")


@attrs.define
class Responder:
    llm: LLMEngine
    tts: TTSEngine
    conversation: Conversation
    state: SessionState
    out: trio.MemorySendChannel[ServerEvent]
    lead: float = 0.2
    chunk_ms: int = 40
    fallbacks: FallbackMessages = attrs.Factory(FallbackMessages)

    async def run(
        self,
        requests: trio.MemoryReceiveChannel[TurnRequest],
        inbox: trio.MemorySendChannel[TurnInput],
    ) -> None:
        """Answer requests in order; (re)connect the TTS lazily so a TTS outage only mutes."""
        async with requests, inbox, AsyncExitStack() as stack:
            conn: TTSConnection | None = None
            async for request in requests:
                self.state.pending_requests -= 1
                self.state.responding = True
                if conn is None:
                    try:
                        conn = await stack.enter_async_context(
                            self.tts.connect(sample_rate=self.state.output_rate)
                        )
                    except TTSError as exc:
                        report(self.tts.name, "connect")
                        await self._error(ev.ERR_TTS, f"TTS unavailable: {exc}")
                try:
                    ok, interrupted = await self.respond(conn, request)
                finally:
                    self.state.responding = False
                    self.state.speaking = False
                await inbox.send(ResponseFinished(trio.current_time(), interrupted))
                if self.state.hangup_reason is not None and not self.state.busy:
                    await trio.sleep(self.lead)  # let the goodbye's last audio play out
                    self.state.hangup.set()
                if not ok:
                    await stack.aclose()
                    conn = None

    async def respond(self, conn: TTSConnection | None, request: TurnRequest) -> tuple[bool, bool]:
        """Speak one answer. Returns (TTS connection still good, answer was interrupted)."""
        uid = new_id()
        timings = request.timings
        messages = self.conversation.messages()
        if not request.canned:
            messages.append(ChatMessage("user", request.text))
        spoken: list[str] = []
        tts_ok = True
        dropped = False
        playback = Playback(uid, self.state.output_rate)

        async def call_llm(tokens_tx: trio.MemorySendChannel[str]) -> None:
            async with tokens_tx:
                if request.canned:
                    await tokens_tx.send(request.text)
                    return
                try:
                    await stream_with_retry(self.llm, messages, tokens_tx)
                    self.fallbacks.success()
                except LLMError as exc:
                    await self._error(ev.llm_error(exc.kind.value), exc.message)
                    if not spoken:
                        await tokens_tx.send(self.fallbacks.message_for(exc.kind))

        async def produce_text(
            tokens_rx: trio.MemoryReceiveChannel[str], text_tx: trio.MemorySendChannel[str]
        ) -> None:
            chunker = SemanticChunker()

            async def emit(chunk: str) -> None:
                spoken.append(chunk)
                await self.out.send(
                    ServerEvent(ev.RESPONSE_TEXT, {"utteranceId": uid, "text": chunk})
                )
                # If the TTS failed, the answer continues as text only.
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await text_tx.send(chunk)

            async with text_tx, tokens_rx:
                async for delta in tokens_rx:
                    if timings.llm_first_token is None:
                        timings.llm_first_token = trio.current_time()
                    for chunk in chunker.feed(delta):
                        await emit(chunk)
                for chunk in chunker.flush():
                    await emit(chunk)

        async def synthesize(
            text_rx: trio.MemoryReceiveChannel[str],
            audio_tx: trio.MemorySendChannel[TTSEvent],
        ) -> None:
            nonlocal tts_ok
            async with text_rx, audio_tx:
                if conn is None:
                    async for _ in text_rx:
                        pass
                    return
                try:
                    await conn.synthesize(uid, text_rx, audio_tx, voice_id=self.state.voice_id)
                except TTSError as exc:
                    report(self.tts.name, "synthesis")
                    tts_ok = False
                    await self._error(ev.ERR_TTS, str(exc))

        async def first_audio() -> None:
            timings.first_audio_sent = trio.current_time()
            self.state.speaking = True

        def first_tts_audio() -> None:
            if timings.tts_first_audio is None:
                timings.tts_first_audio = trio.current_time()

        async def player(audio_rx: trio.MemoryReceiveChannel[TTSEvent]) -> None:
            await play(
                audio_rx,
                self.out,
                playback,
                source_rate=self.tts.sample_rate if conn is None else conn.sample_rate,
                lead=self.lead,
                chunk_ms=self.chunk_ms,
                on_first_audio=first_audio,
                on_tts_audio=first_tts_audio,
                on_late=functools.partial(self.state.meter.audio_late, "out"),
            )

        with trio.CancelScope() as scope:
            self.state.response_scope = scope
            async with trio.open_nursery() as nursery:
                tokens_tx, tokens_rx = trio.open_memory_channel[str](256)
                nursery.start_soon(call_llm, tokens_tx)
                if request.gate is not None and not await request.gate.wait():
                    dropped = True  # a wrong guess: dropped before the caller saw anything
                    scope.cancel()
                if not request.canned:
                    self.conversation.add_user(request.text)
                await self.out.send(
                    ServerEvent(ev.RESPONSE_START, {"utteranceId": uid, "timestamp": _wall_ms()})
                )
                text_tx, text_rx = trio.open_memory_channel[str](8)
                audio_tx, audio_rx = trio.open_memory_channel[TTSEvent](32)
                nursery.start_soon(produce_text, tokens_rx, text_tx)
                nursery.start_soon(synthesize, text_rx, audio_tx)
                nursery.start_soon(player, audio_rx)
        self.state.response_scope = None
        self.state.speaking = False
        if dropped:
            return True, False
        interrupted = scope.cancelled_caught
        if interrupted:
            now = trio.current_time()
            text = playback.heard_text(now, " ".join(spoken))
            unplayed = playback.sent_seconds - playback.heard_seconds(now)
            if unplayed > 0:
                self.state.meter.audio_dropped("out", "barge_in", unplayed)
            if playback.started_at is not None:
                await self.out.send(
                    ServerEvent(ev.OUTPUT_CANCEL, {"utteranceId": uid, "reason": "barge_in"})
                )
        else:
            text = " ".join(spoken)
        if text:
            self.conversation.add_assistant(text)
        await self.out.send(ServerEvent(ev.RESPONSE_COMPLETE, {"utteranceId": uid}))
        await self.out.send(
            ServerEvent(
                ev.METRICS_TURN,
                {
                    "utteranceId": uid,
                    **timings.as_payload(),
                    "underruns": playback.underruns,
                    "lateAudioMs": round(playback.late_seconds * 1000.0, 1),
                },
            )
        )
        return tts_ok, interrupted

    async def _error(self, event_type: str, message: str) -> None:
        log.warning("session %s: %s: %s", self.state.session_id, event_type, message)
        await self.out.send(ServerEvent(event_type, {"message": message}, request_type="turn"))


def _wall_ms() -> int:
    return int(time.time() * 1000)


__all__ = ["LLMErrorKind", "Responder"]
