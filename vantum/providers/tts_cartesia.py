"""Cartesia streaming TTS over one WebSocket per session.

Every answer is one Cartesia *context*: each text chunk goes out with
``continue: true`` as soon as it arrives, so Cartesia keeps prosody across
chunks and audio starts before the answer is complete; a last empty request
with ``continue: false`` closes it. Responses of all contexts share the socket,
so a reader task demultiplexes them by ``context_id`` into per-context bounded
channels (a consumer that stops reading holds back the whole socket, which is
the backpressure we want), and a single writer task owns sending, so cancelling a caller can
never leave half a frame on the wire.

Our chunker already cuts complete phrases, so by default we ask Cartesia not to
buffer (``max_buffer_delay_ms=0``, its "custom buffering" mode); ``None`` leaves
Cartesia's managed buffering (up to 3 s) on, for token-level input.

Chunks are joined like words: a space is inserted between two chunks when
neither has whitespace at the seam, because Cartesia concatenates transcripts
verbatim and our chunker strips its chunks. For raw token streams pass
``phrase_chunks=False`` (text is then sent verbatim) and ``max_buffer_delay_ms=None``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import NoReturn

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)

from ..errors import TTSError
from . import cartesia_messages as cm
from .base import TTSAudio, TTSEvent, WordTimestamps
from .reporting import report

log = logging.getLogger(__name__)

DEFAULT_VOICE_ID = "a0e99841-438c-4a64-b679-ae501e7d6091"

LANGUAGES = frozenset(
    ["en", "fr", "de", "es", "pt", "zh", "ja", "hi", "it", "ko", "nl", "pl", "ru", "sv", "tr"]
)
"""What sonic-2 speaks (Cartesia's model page: the same 15 for every snapshot)."""


def cartesia_language(tag: str | None, default: str) -> str:
    """Cartesia's language for a call's BCP-47 tag: its primary subtag (``es-ES`` →
    ``es``) when Cartesia speaks it, else ``default`` (the engine's configured one)."""
    if tag is None:
        return default
    primary = tag.split("-", 1)[0].lower()
    return primary if primary in LANGUAGES else default


class CartesiaTTS:
    """Engine factory: holds settings; each ``connect()`` is one session's socket."""

    name = "cartesia"

    def __init__(
        self,
        api_key: str,
        url: str = cm.DEFAULT_URL,
        *,
        version: str = cm.DEFAULT_VERSION,
        model_id: str = "sonic-2",
        voice_id: str = DEFAULT_VOICE_ID,
        language: str = "en",
        sample_rate: int = 24_000,
        add_timestamps: bool = True,
        max_buffer_delay_ms: int | None = 0,
        phrase_chunks: bool = True,
        connect_timeout: float = 10.0,
        cancel_timeout: float = 1.0,
        stall_timeout: float = 5.0,
    ) -> None:
        self.api_key = api_key
        self.url = url
        self.version = version
        self.model_id = model_id
        self.voice_id = voice_id
        self.language = language
        self.sample_rate = sample_rate
        self.add_timestamps = add_timestamps
        self.max_buffer_delay_ms = max_buffer_delay_ms
        self.phrase_chunks = phrase_chunks
        self.connect_timeout = connect_timeout
        self.cancel_timeout = cancel_timeout
        self.stall_timeout = stall_timeout

    def connect(
        self, sample_rate: int | None = None
    ) -> AbstractAsyncContextManager[CartesiaConnection]:
        """Open a session's connection, producing ``sample_rate`` audio if Cartesia can."""
        rate = sample_rate if sample_rate in cm.SAMPLE_RATES else self.sample_rate
        return _session(self, rate)


@asynccontextmanager
async def _session(engine: CartesiaTTS, sample_rate: int) -> AsyncIterator[CartesiaConnection]:
    try:
        async with trio.open_nursery() as nursery:
            conn = CartesiaConnection(engine, nursery, sample_rate)
            await conn._ensure_link()  # fail fast: a bad key surfaces at connect()
            try:
                yield conn
            finally:
                conn._shutdown()
    except BaseExceptionGroup as group:
        _unwrap(group)


def _unwrap(group: BaseExceptionGroup[BaseException]) -> NoReturn:
    """Re-raise a nursery's lone exception bare, as callers of a plain call expect.

    Our tasks handle their own errors, so a group of one is the caller's body
    (or the connect error) and wrapping it would only break ``except TTSError``.
    """
    if len(group.exceptions) != 1:
        raise group
    exc = group.exceptions[0]
    context = exc.__context__
    try:
        raise exc
    finally:
        exc.__context__ = context
        del exc, context


@attrs.define
class _Link:
    """One live WebSocket: where to send, and who is listening for what."""

    outbound: trio.MemorySendChannel[str]
    contexts: dict[str, trio.MemorySendChannel[cm.Response]] = attrs.Factory(dict)
    alive: bool = True
    error: str = "connection to Cartesia lost"


@attrs.define
class _Progress:
    sent_any: bool = False
    finished: bool = False
    error: str | None = None
    text_done: bool = False
    """The closing request went out: from now on silence means a stalled context."""
    waiting: trio.CancelScope | None = None


class CartesiaConnection:
    """A session's connection; reconnects lazily if the socket dropped between answers."""

    def __init__(self, engine: CartesiaTTS, nursery: trio.Nursery, sample_rate: int) -> None:
        self._engine = engine
        self.sample_rate = sample_rate
        """Every context of this connection asks for audio at this rate."""
        self._nursery = nursery
        self._link: _Link | None = None
        self._lock = trio.Lock()
        self._closing = False
        self.connects = 0

    async def synthesize(
        self,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        out: trio.MemorySendChannel[TTSEvent],
        *,
        voice_id: str | None = None,
        language: str | None = None,
    ) -> None:
        link = await self._ensure_link()
        inbox_tx, inbox_rx = trio.open_memory_channel[cm.Response](32)
        link.contexts[context_id] = inbox_tx
        progress = _Progress()
        try:
            async with trio.open_nursery() as nursery:
                spoken = cartesia_language(language, self._engine.language)
                nursery.start_soon(
                    self._send_text, link, context_id, text, voice_id, spoken, progress, nursery
                )
                await self._forward(link, inbox_rx, out, progress)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            _unwrap(group)
        finally:
            if link.contexts.get(context_id) is inbox_tx:
                del link.contexts[context_id]
            inbox_rx.close()  # anything still arriving for this context is dropped
            if progress.sent_any and not progress.finished:
                await self._cancel_at_provider(link, context_id)
        if progress.error is not None:
            raise TTSError(progress.error)

    async def _send_text(
        self,
        link: _Link,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        voice_id: str | None,
        language: str,
        progress: _Progress,
        nursery: trio.Nursery,
    ) -> None:
        engine = self._engine
        request = cm.GenerationRequest(
            context_id=context_id,
            transcript="",
            model_id=engine.model_id,
            voice_id=voice_id or engine.voice_id,
            output_format=cm.OutputFormat(sample_rate=self.sample_rate),
            language=language,
            continue_=True,
            add_timestamps=engine.add_timestamps,
            max_buffer_delay_ms=engine.max_buffer_delay_ms,
        )
        previous = ""
        try:
            async for chunk in text:
                if not chunk:
                    continue
                seam = previous and not previous[-1].isspace() and not chunk[0].isspace()
                if seam and engine.phrase_chunks:
                    chunk = " " + chunk
                await link.outbound.send(cm.encode_request(attrs.evolve(request, transcript=chunk)))
                progress.sent_any = True
                previous = chunk
            if not progress.sent_any:  # nothing to say: Cartesia would answer with an error
                progress.finished = True
                nursery.cancel_scope.cancel()
                return
            await link.outbound.send(cm.encode_request(attrs.evolve(request, continue_=False)))
            progress.text_done = True
            if progress.waiting is not None:
                progress.waiting.deadline = trio.current_time() + engine.stall_timeout
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the socket died; the reader ends this context's inbox with the reason

    async def _forward(
        self,
        link: _Link,
        inbox: trio.MemoryReceiveChannel[cm.Response],
        out: trio.MemorySendChannel[TTSEvent],
        progress: _Progress,
    ) -> None:
        """Relay one context's responses until it is done.

        Once all text is sent, every response must follow the previous one within
        ``stall_timeout``: a context the provider forgot would otherwise hold the
        answer (and the call's turn-taking) forever. Before that, silence can just
        mean the LLM is slow, so there is no limit.
        """
        timeout = self._engine.stall_timeout
        while True:
            with trio.CancelScope() as waiting:
                if progress.text_done:
                    waiting.deadline = trio.current_time() + timeout
                progress.waiting = waiting
                try:
                    response = await inbox.receive()
                except trio.EndOfChannel:
                    break
                finally:
                    progress.waiting = None
            if waiting.cancelled_caught:
                progress.error = f"Cartesia sent nothing for {timeout:g}s (context stalled)"
                return
            if isinstance(response, cm.AudioChunk):
                if response.pcm:
                    await out.send(TTSAudio(response.pcm))
            elif isinstance(response, cm.Timestamps):
                await out.send(WordTimestamps(response.words, response.start, response.end))
            elif isinstance(response, cm.Done):
                progress.finished = True
                return
            elif isinstance(response, cm.ErrorResponse):
                progress.finished = True
                progress.error = response.describe()
                return
        progress.error = link.error  # inbox closed: the connection ended first

    async def _cancel_at_provider(self, link: _Link, context_id: str) -> None:
        message = cm.encode_request(cm.CancelRequest(context_id))
        # shielded: we are usually here because the caller was cancelled;
        # a dead socket has nothing left to cancel
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(self._engine.cancel_timeout),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await link.outbound.send(message)

    # ------------------------------------------------------------- the socket

    async def _ensure_link(self) -> _Link:
        async with self._lock:
            if self._closing:
                raise TTSError("Cartesia connection is closed")
            if self._link is None or not self._link.alive:
                try:
                    self._link = await self._nursery.start(self._run_link)
                except ConnectionRejected as exc:
                    status = exc.status_code
                    raise TTSError(f"Cartesia refused the connection (HTTP {status})") from exc
                except HandshakeError as exc:  # timeout, or the socket failed (__cause__)
                    detail = exc.__cause__ or type(exc).__name__
                    raise TTSError(f"cannot connect to Cartesia: {detail}") from exc
                except (OSError, trio.BrokenResourceError, ConnectionClosed) as exc:
                    raise TTSError(f"cannot connect to Cartesia: {exc}") from exc
            return self._link

    def _shutdown(self) -> None:
        """Close the socket gracefully: the writer sees end of input and closes it."""
        self._closing = True
        if self._link is not None:
            self._link.outbound.close()

    async def _run_link(self, task_status: trio.TaskStatus[_Link]) -> None:
        engine = self._engine
        url = cm.build_url(engine.url, engine.api_key, engine.version)
        outbound_tx, outbound_rx = trio.open_memory_channel[str](32)
        link = _Link(outbound_tx)
        started = False
        try:
            # trio-websocket's own connect_timeout leaves its reader waiting on a
            # server that holds the handshake, so this scope enforces it.
            with trio.CancelScope(deadline=trio.current_time() + engine.connect_timeout) as opening:
                async with open_websocket_url(
                    url,
                    connect_timeout=engine.connect_timeout,
                    disconnect_timeout=engine.cancel_timeout,
                    max_message_size=4 * 1024 * 1024,
                ) as ws:
                    opening.deadline = math.inf
                    self.connects += 1
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._write, ws, outbound_rx)
                        task_status.started(link)
                        started = True
                        await self._read(ws, link)
                        nursery.cancel_scope.cancel()
            if opening.cancelled_caught:
                raise ConnectionTimeout
        except (ConnectionClosed, HandshakeError, OSError, trio.BrokenResourceError) as exc:
            if not started:
                raise  # nursery.start() hands it to _ensure_link
            link.error = f"connection to Cartesia lost: {exc}"
        finally:
            link.alive = False
            outbound_tx.close()
            for inbox in link.contexts.values():
                inbox.close()

    async def _write(
        self, ws: WebSocketConnection, outbound: trio.MemoryReceiveChannel[str]
    ) -> None:
        async for message in outbound:
            try:
                await ws.send_message(message)
            except ConnectionClosed:
                return
        with trio.move_on_after(self._engine.cancel_timeout):
            await ws.aclose()

    async def _read(self, ws: WebSocketConnection, link: _Link) -> None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                if reason is not None and reason.code != 1000:
                    link.error = f"connection to Cartesia lost: {reason.code} {reason.reason}"
                return
            try:
                response = cm.parse_response(message)
            except cm.CartesiaMessageError as exc:
                report("cartesia", "malformed")
                log.warning("ignoring malformed Cartesia message: %s", exc)
                continue
            inbox = link.contexts.get(response.context_id or "")
            if inbox is None:
                if isinstance(response, cm.ErrorResponse):  # stale contexts are expected
                    level = logging.WARNING if response.context_id is None else logging.DEBUG
                    log.log(level, "Cartesia error outside a live context: %s", response.describe())
                continue
            # a context cancelled meanwhile has closed its inbox
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await inbox.send(response)
