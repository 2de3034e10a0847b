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
``fake.drop_next_connection_after(chunks=3)`` (close frame 1011). For fault matrices:

- ``fake.slow_start_next(seconds)``: the next handshake is answered after ``seconds``.
- ``fake.refuse_for(seconds, status=429)``: a 429 storm — every handshake in the next
  ``seconds`` is refused with a real HTTP ``status``; ``await fake.wait_refusals_over()``.
- ``fake.reset_next_connection_after(chunks)``: after that many audio chunks the next
  connection is reset (TCP RST, no close frame), like a crashed upstream.
- ``fake.stall_next_context(after_chunks=1, seconds=math.inf)``: the next new context
  goes silent after that many chunks (the connection stays up and answers others).
- ``fake.malform_next(after_chunks=1, kind="json" | "shape")``: the next connection
  sends one extra text frame that is not JSON, or is JSON of the wrong shape.

``fake.injected`` counts the faults actually served, by name.
"""

from __future__ import annotations

import collections
import math
import socket
import struct
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

import attrs
import numpy as np
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from ..providers import cartesia_messages as cm
from .faults import RefusalWindow
from .loopback import serve_streams

SECONDS_PER_CHAR = 0.06
PATH = "/tts/websocket"
_MALFORMED = {
    "json": '{"type": "chunk", "context_id": "x", "data": "AAAA',
    "shape": '{"type": "chunk", "context_id": 42, "data": ["not", "base64"], "done": "no"}',
}


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
    stall: tuple[int, float] | None = None
    """Injected: (after this many chunks, go silent this long)."""


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
    injected: collections.Counter[str] = attrs.Factory(collections.Counter)
    """Faults actually served: ``slow_start``, ``refused``, ``reset``, ``stall``, ``malformed``."""
    _fail_next: list[tuple[str, int]] = attrs.Factory(list)
    _reject_next: list[int] = attrs.Factory(list)
    _drop_after: list[int] = attrs.Factory(list)
    _slow_starts: list[float] = attrs.Factory(list)
    _refuse: RefusalWindow = attrs.Factory(RefusalWindow)
    _resets: list[int] = attrs.Factory(list)
    _stalls: list[tuple[int, float]] = attrs.Factory(list)
    _malformed: list[tuple[int, str]] = attrs.Factory(list)

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

    def slow_start_next(self, seconds: float) -> None:
        """Answer the next handshake only after ``seconds``."""
        self._slow_starts.append(seconds)

    def refuse_for(self, seconds: float, status: int = 429) -> None:
        """Refuse every handshake with HTTP ``status`` for the next ``seconds``."""
        self._refuse.open(seconds, status)

    async def wait_refusals_over(self) -> None:
        """Return once a ``refuse_for`` window has passed."""
        await self._refuse.wait_over()

    def reset_next_connection_after(self, chunks: int) -> None:
        """Reset (TCP RST, no close frame) the next connection after ``chunks`` audio chunks."""
        self._resets.append(chunks)

    def stall_next_context(self, after_chunks: int = 1, seconds: float = math.inf) -> None:
        """Make the next new context go silent after ``after_chunks`` chunks for ``seconds``."""
        self._stalls.append((after_chunks, seconds))

    def malform_next(self, after_chunks: int = 1, kind: str = "json") -> None:
        """Send one malformed text frame on the next connection after ``after_chunks`` chunks."""
        if kind not in _MALFORMED:
            raise ValueError(f"kind must be one of {sorted(_MALFORMED)}")
        self._malformed.append((after_chunks, kind))

    # ------------------------------------------------------------ connection

    async def _serve_stream(self, stream: trio.SocketStream) -> None:
        """One TCP connection; owning the stream lets a fault reset it."""
        try:
            async with trio.open_nursery() as nursery:
                with trio.move_on_after(10) as handshake:
                    request = await wrap_server_stream(nursery, stream)
                if not handshake.cancelled_caught:
                    if self._slow_starts:
                        self.injected["slow_start"] += 1
                        await trio.sleep(self._slow_starts.pop(0))
                    await self._handle(request, stream)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
            pass  # the client went away
        finally:
            await trio.aclose_forcefully(stream)

    async def _handle(self, request: WebSocketRequest, stream: trio.SocketStream) -> None:
        status = self._handshake_status(request)
        if status != 101:
            self.rejected.append(status)
            body = b'{"error": "Invalid API key or missing cartesia_version"}'
            await request.reject(status, body=body)
            return
        _key, version = cm.handshake_credentials(request.path, request.headers)
        ws = await request.accept()
        self.connections += 1
        faults = _WriteFaults(
            drop_after=self._drop_after.pop(0) if self._drop_after else None,
            reset_after=self._resets.pop(0) if self._resets else None,
            malformed=self._malformed.pop(0) if self._malformed else None,
        )
        send, recv = trio.open_memory_channel[Outgoing](64)
        async with trio.open_nursery() as nursery:
            conn = _Connection(self, nursery, send, (version or "") >= cm.STRUCTURED_ERRORS_SINCE)
            nursery.start_soon(conn.write, ws, stream, recv, faults)
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
        refused = self._refuse.status_now()
        if refused is not None:
            self.injected["refused"] += 1
            return refused
        if request.path.split("?", 1)[0] != PATH:
            return 404
        api_key, version = cm.handshake_credentials(request.path, request.headers)
        if api_key != self.config.api_key:
            return 401
        if not version:
            return 400
        return 101


@attrs.define
class _WriteFaults:
    """What the next connection's writer was told to do wrong."""

    drop_after: int | None = None
    reset_after: int | None = None
    malformed: tuple[int, str] | None = None


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
        stream: trio.SocketStream,
        outgoing: trio.MemoryReceiveChannel[Outgoing],
        faults: _WriteFaults,
    ) -> None:
        """Single writer: nothing for a cancelled context leaves after its cancel."""
        chunks = 0
        async for context_id, response in outgoing:
            if context_id is not None and context_id in self.cancelled:
                continue
            try:
                await ws.send_message(cm.encode_response(response))
                if not isinstance(response, cm.AudioChunk):
                    continue
                chunks += 1
                if faults.malformed is not None and chunks >= faults.malformed[0]:
                    await ws.send_message(_MALFORMED[faults.malformed[1]])
                    faults.malformed = None
                    self.fake.injected["malformed"] += 1
            except ConnectionClosed:
                return
            if faults.drop_after is not None and chunks >= faults.drop_after:
                await ws.aclose(1011, "fake: connection dropped")
                return
            if faults.reset_after is not None and chunks >= faults.reset_after:
                self.fake.injected["reset"] += 1
                # SO_LINGER 0: close() sends RST, so the peer sees a reset, not a FIN
                stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                await trio.aclose_forcefully(stream)
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
            if self.fake._stalls:
                ctx.stall = self.fake._stalls.pop(0)
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
            stream = _ContextStream(self.fake, ctx.id, self.send, stall=ctx.stall)
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
    stall: tuple[int, float] | None = None
    sent: int = 0

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
            if self.stall is not None and self.sent >= self.stall[0]:
                self.fake.injected["stall"] += 1
                await trio.sleep(self.stall[1])
                self.stall = None
                self.due = trio.current_time()
            self.sent += 1
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
    if fmt.sample_rate not in cm.SAMPLE_RATES:
        return f"unsupported sample_rate {fmt.sample_rate}"
    return None


@asynccontextmanager
async def serve_fake_cartesia(
    config: FakeCartesiaConfig = FakeCartesiaConfig(), host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeCartesia]:
    """Run the fake on ``host:port`` (0 = any free port) until the block exits."""
    fake = FakeCartesia(config)
    async with serve_streams(fake._serve_stream, host, port) as bound:
        fake.url = f"ws://{host}:{bound}{PATH}"
        yield fake
