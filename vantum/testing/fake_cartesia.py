"""A protocol-faithful fake of Cartesia's TTS WebSocket, for tests without a key.

It speaks the real wire format over a real socket (auth via ``api_key`` query
parameter or ``X-API-Key`` header, ``cartesia_version`` required), keeps several
contexts per connection, honours ``continue``/``cancel``/``flush``, and streams
real PCM: a voiced tone per word (pitch varies by word), silence for
whitespace, ``expected_duration(text)`` seconds long, faster than real time.

Usage::

    async with serve_fake_cartesia() as fake:
        tts = CartesiaTTS(fake.api_key, fake.url)
        async with tts.connect() as conn:
            ...
        assert fake.completed == [context_id]
        # audio you received lasts expected_duration(full_text) seconds

Faults: ``fake.fail_next_context("boom")``, ``fake.reject_next(401)``,
``fake.drop_next_connection_after(chunks=3)``.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from http import HTTPStatus

import attrs
import numpy as np
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from ..providers import cartesia_messages as cm

SECONDS_PER_CHAR = 0.06
SAMPLE_RATES = (8000, 16000, 22050, 24000, 44100, 48000)
PATH = "/tts/websocket"


def expected_duration(text: str) -> float:
    """Seconds of audio the fake produces for ``text`` (additive over pieces)."""
    return len(text) * SECONDS_PER_CHAR


def render_pcm(text: str, sample_rate: int) -> bytes:
    """PCM16LE for ``text``: one harmonic tone per word, silence per whitespace char."""
    per_char = round(SECONDS_PER_CHAR * sample_rate)
    parts: list[np.ndarray] = []
    for word, is_space in _runs(text):
        n = per_char * len(word)
        if is_space:
            parts.append(np.zeros(n, dtype=np.float64))
            continue
        f0 = 110.0 + 15.0 * (sum(map(ord, word)) % 9)
        t = np.arange(n) / sample_rate
        tone = sum(np.sin(2 * math.pi * h * f0 * t) / h for h in (1, 2, 3, 4))
        ramp = min(n // 2, int(0.008 * sample_rate))
        env = np.ones(n)
        if ramp:
            fade = 0.5 - 0.5 * np.cos(np.linspace(0.0, math.pi, ramp))
            env[:ramp], env[n - ramp :] = fade, fade[::-1]
        parts.append(0.25 * tone * env)
    if not parts:
        return b""
    signal = np.concatenate(parts)
    pcm: bytes = (np.clip(signal, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    return pcm


def word_timestamps(text: str, start_char: int) -> tuple[list[str], list[float], list[float]]:
    """Word timings for ``text`` spoken from character offset ``start_char`` on."""
    words: list[str] = []
    starts: list[float] = []
    ends: list[float] = []
    pos = start_char
    for word, is_space in _runs(text):
        if not is_space:
            words.append(word)
            starts.append(round(pos * SECONDS_PER_CHAR, 6))
            ends.append(round((pos + len(word)) * SECONDS_PER_CHAR, 6))
        pos += len(word)
    return words, starts, ends


def _runs(text: str) -> list[tuple[str, bool]]:
    runs: list[tuple[str, bool]] = []
    for ch in text:
        space = ch.isspace()
        if runs and runs[-1][1] == space:
            runs[-1] = (runs[-1][0] + ch, space)
        else:
            runs.append((ch, space))
    return runs


@attrs.frozen
class FakeCartesiaConfig:
    api_key: str = "fake-cartesia-key"
    first_chunk_latency: float = 0.09
    """Seconds from a context's first request to its first audio chunk."""
    realtime_factor: float = 4.0
    """Audio seconds produced per wall-clock second."""
    chunk_ms: int = 40
    max_buffer_delay_ms: int = 3000
    """Used when a request sets none: how long a trailing partial word may wait."""
    idle_timeout: float = 300.0
    """Close a connection that sent nothing for this long (as Cartesia does)."""


@attrs.define
class _Context:
    id: str
    settings: tuple[object, ...]
    inbox: trio.MemorySendChannel[tuple[cm.GenerationRequest, float]]
    scope: trio.CancelScope = attrs.Factory(trio.CancelScope)


Outgoing = tuple[str | None, cm.Response]


@attrs.define
class FakeCartesia:
    """The running fake: its URL, what it received, and fault switches."""

    config: FakeCartesiaConfig
    url: str = ""
    connections: int = 0
    rejected: list[int] = attrs.Factory(list)
    requests: dict[str, list[cm.GenerationRequest]] = attrs.Factory(dict)
    cancels: list[str] = attrs.Factory(list)
    completed: list[str] = attrs.Factory(list)
    errors_sent: list[cm.ErrorResponse] = attrs.Factory(list)
    audio_seconds: dict[str, float] = attrs.Factory(dict)
    _fail_next: list[tuple[str, int]] = attrs.Factory(list)
    _reject_next: list[int] = attrs.Factory(list)
    _drop_after: list[int] = attrs.Factory(list)

    @property
    def api_key(self) -> str:
        return self.config.api_key

    def fail_next_context(self, message: str, status_code: int = 500) -> None:
        """The next new context gets an error response instead of audio."""
        self._fail_next.append((message, status_code))

    def reject_next(self, status: int = 401) -> None:
        """Refuse the next WebSocket handshake with this HTTP status."""
        self._reject_next.append(status)

    def drop_next_connection_after(self, chunks: int) -> None:
        """Close the next accepted connection (code 1011) after sending ``chunks`` audio chunks."""
        self._drop_after.append(chunks)

    # ------------------------------------------------------------ connection

    async def _handle(self, request: WebSocketRequest) -> None:
        status = self._handshake_status(request)
        if status != 101:
            self.rejected.append(status)
            body = b'{"error": "Invalid API key or missing cartesia_version"}'
            await request.reject(status, body=body)
            return
        _key, version = cm.handshake_credentials(request.path, request.headers)
        ws = await request.accept()
        self.connections += 1
        drop_after = self._drop_after.pop(0) if self._drop_after else None
        send, recv = trio.open_memory_channel[Outgoing](64)
        async with trio.open_nursery() as nursery:
            conn = _Connection(self, nursery, send, (version or "") >= cm.STRUCTURED_ERRORS_SINCE)
            nursery.start_soon(conn.write, ws, recv, drop_after)
            try:
                while True:
                    with trio.move_on_after(self.config.idle_timeout) as idle:
                        message = await ws.get_message()
                    if idle.cancelled_caught:
                        await ws.aclose(1000, "idle timeout")
                        break
                    await conn.on_message(message)
            except ConnectionClosed:
                pass
            nursery.cancel_scope.cancel()

    def _handshake_status(self, request: WebSocketRequest) -> int:
        if self._reject_next:
            return self._reject_next.pop(0)
        if request.path.split("?", 1)[0] != PATH:
            return 404
        api_key, version = cm.handshake_credentials(request.path, request.headers)
        if api_key != self.config.api_key:
            return 401
        if not version:
            return 400
        return 101


@attrs.define
class _Connection:
    """One accepted WebSocket: its contexts and its single writer."""

    fake: FakeCartesia
    nursery: trio.Nursery
    send: trio.MemorySendChannel[Outgoing]
    structured_errors: bool
    contexts: dict[str, _Context] = attrs.Factory(dict)
    closed: set[str] = attrs.Factory(set)
    cancelled: set[str] = attrs.Factory(set)

    async def write(
        self,
        ws: WebSocketConnection,
        outgoing: trio.MemoryReceiveChannel[Outgoing],
        drop_after: int | None,
    ) -> None:
        """Single writer: nothing for a cancelled context leaves after its cancel."""
        chunks = 0
        async for context_id, response in outgoing:
            if context_id is not None and context_id in self.cancelled:
                continue
            try:
                await ws.send_message(cm.encode_response(response))
            except ConnectionClosed:
                return
            if isinstance(response, cm.AudioChunk):
                chunks += 1
                if drop_after is not None and chunks >= drop_after:
                    await ws.aclose(1011, "fake: connection dropped")
                    return

    async def on_message(self, message: str | bytes) -> None:
        try:
            request = cm.parse_request(message)
        except cm.CartesiaMessageError as exc:
            await self.error(None, str(exc), 400)
            return
        if isinstance(request, cm.CancelRequest):
            self.fake.cancels.append(request.context_id)
            self.cancelled.add(request.context_id)
            self.closed.add(request.context_id)
            ctx = self.contexts.pop(request.context_id, None)
            if ctx is not None:
                ctx.scope.cancel()
            return
        context_id = request.context_id or str(uuid.uuid4())
        self.fake.requests.setdefault(context_id, []).append(request)
        ctx = self.contexts.get(context_id)
        problem = _check_format(request)
        if problem is None and ctx is None and context_id in self.closed:
            problem = f"context {context_id} is already closed"
        if problem is None and ctx is not None and ctx.settings != request.settings():
            problem = "inputs of one context must keep every field but transcript and continue"
        if problem is not None:
            await self.error(context_id, problem, 400)
            return
        if ctx is None:
            if self.fake._fail_next:
                text, status = self.fake._fail_next.pop(0)
                self.closed.add(context_id)
                await self.error(context_id, text, status)
                return
            inbox, inbox_recv = trio.open_memory_channel[tuple[cm.GenerationRequest, float]](256)
            ctx = _Context(context_id, request.settings(), inbox)
            self.contexts[context_id] = ctx
            self.nursery.start_soon(self.run_context, ctx, inbox_recv)
        try:
            await ctx.inbox.send((request, trio.current_time()))
        except trio.BrokenResourceError:
            return  # the context ended meanwhile (cancelled)
        if not request.continue_:
            ctx.inbox.close()

    async def error(self, context_id: str | None, message: str, status: int) -> None:
        try:
            title = HTTPStatus(status).phrase
        except ValueError:
            title = "Error"
        error = cm.ErrorResponse(context_id, message, status)
        if self.structured_errors:
            error = attrs.evolve(error, title=title, error_code=f"http_{status}")
        self.fake.errors_sent.append(error)
        await self.send.send((context_id, error))

    async def run_context(
        self,
        ctx: _Context,
        inbox: trio.MemoryReceiveChannel[tuple[cm.GenerationRequest, float]],
    ) -> None:
        with inbox, ctx.scope:
            stream = _ContextStream(self.fake, ctx.id, self.send)
            buffered = ""
            got_text = False
            while True:
                request: cm.GenerationRequest | None = None
                with trio.move_on_after(stream.buffer_delay if buffered else math.inf):
                    try:
                        request, arrived = await inbox.receive()
                    except trio.EndOfChannel:
                        break
                if request is None:  # buffer delay elapsed: speak the partial word
                    await stream.speak(buffered, trio.current_time())
                    buffered = ""
                    continue
                stream.configure(request)
                buffered += request.transcript
                got_text = got_text or bool(request.transcript)
                final = not request.continue_
                everything = final or request.flush or stream.buffer_delay == 0
                cut = len(buffered) if everything else _speakable(buffered)
                await stream.speak(buffered[:cut], arrived)
                buffered = buffered[cut:]
                if request.flush:
                    await stream.flush_done()
            if not got_text:
                await self.error(ctx.id, "transcript must not be empty", 400)
            else:
                self.fake.completed.append(ctx.id)
                await self.send.send((ctx.id, cm.Done(ctx.id)))
        self.contexts.pop(ctx.id, None)
        self.closed.add(ctx.id)


@attrs.define
class _ContextStream:
    """Turns one context's text into paced chunk/timestamps responses."""

    fake: FakeCartesia
    context_id: str
    send: trio.MemorySendChannel[Outgoing]
    sample_rate: int = 24_000
    add_timestamps: bool = False
    buffer_delay: float = 3.0
    chars: int = 0
    due: float | None = None
    flushes: int = 0

    def configure(self, request: cm.GenerationRequest) -> None:
        self.sample_rate = request.output_format.sample_rate
        self.add_timestamps = request.add_timestamps
        delay_ms = request.max_buffer_delay_ms
        config = self.fake.config
        self.buffer_delay = (config.max_buffer_delay_ms if delay_ms is None else delay_ms) / 1000

    async def speak(self, text: str, arrived: float) -> None:
        if not text:
            return
        config = self.fake.config
        latency = config.first_chunk_latency if self.due is None else 0.0
        self.due = max(self.due or 0.0, arrived + latency)
        pcm = render_pcm(text, self.sample_rate)
        step = 2 * max(1, self.sample_rate * config.chunk_ms // 1000)
        for i in range(0, len(pcm), step):
            piece = pcm[i : i + step]
            seconds = len(piece) / 2 / self.sample_rate
            await trio.sleep_until(self.due)
            step_time = round(1000 * seconds / config.realtime_factor, 3)
            await self.send.send(
                (self.context_id, cm.AudioChunk(self.context_id, piece, step_time))
            )
            done = self.fake.audio_seconds.get(self.context_id, 0.0)
            self.fake.audio_seconds[self.context_id] = done + seconds
            self.due += seconds / config.realtime_factor
        if self.add_timestamps:
            words, start, end = word_timestamps(text, self.chars)
            if words:
                ts = cm.Timestamps(self.context_id, tuple(words), tuple(start), tuple(end))
                await self.send.send((self.context_id, ts))
        self.chars += len(text)

    async def flush_done(self) -> None:
        self.flushes += 1
        await self.send.send((self.context_id, cm.FlushDone(self.context_id, self.flushes)))


def _speakable(text: str) -> int:
    """How much of a continued context can be spoken now: up to a natural break.

    A trailing partial word waits for more text (or the buffer delay), as the
    next transcript may complete it.
    """
    if text.endswith((".", "!", "?", ",", ";", ":")):
        return len(text)
    for i in range(len(text) - 1, -1, -1):
        if text[i].isspace():
            return i + 1
    return 0


def _check_format(request: cm.GenerationRequest) -> str | None:
    fmt = request.output_format
    if fmt.container != "raw" or fmt.encoding != "pcm_s16le":
        return "this fake only produces container=raw, encoding=pcm_s16le"
    if fmt.sample_rate not in SAMPLE_RATES:
        return f"unsupported sample_rate {fmt.sample_rate}"
    return None


@asynccontextmanager
async def serve_fake_cartesia(
    config: FakeCartesiaConfig = FakeCartesiaConfig(), host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeCartesia]:
    """Run the fake on ``host:port`` (0 = any free port) until the block exits."""
    fake = FakeCartesia(config)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(serve_websocket, fake._handle, host, port, None, handler_nursery=nursery)
        )
        fake.url = f"ws://{host}:{server.port}{PATH}"
        try:
            yield fake
        finally:
            nursery.cancel_scope.cancel()
