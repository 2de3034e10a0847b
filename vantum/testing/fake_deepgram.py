"""A protocol-faithful fake of Deepgram's live transcription WebSocket.

It speaks the real wire format over a real socket: ``Authorization: Token <key>``
and the query parameters are checked (401 / 400 like the service), audio arrives
as binary PCM16 frames, ``KeepAlive`` / ``Finalize`` / ``CloseStream`` behave as
documented, and ``Results`` / ``SpeechStarted`` / ``UtteranceEnd`` / ``Metadata``
carry the real shapes, in the real order, after a configurable latency.

Recognition is driven by audio energy (use :mod:`vantum.testing.audio_fixtures`):
20 ms frames louder than ``speech_threshold_dbfs`` are speech. An utterance's
words come from ``config.script``; interim results reveal one more word per
``word_interval`` of speech, and ``endpointing`` ms of silence ends it with a
``speech_final`` result. The script entry is chosen by the utterance's first
audio frame, so the same audio always gets the same words, as with a real
recogniser: a client that reconnects and re-sends audio gets identical results.
Timestamps are seconds of audio received on *that* connection (each connection
is a fresh stream, as with Deepgram).

Usage::

    async with serve_fake_deepgram(FakeDeepgramConfig(script=["hello world"])) as fake:
        stt = DeepgramSTT(fake.api_key, fake.url)
        ...  # run it on speech_like(1.0) + silence(0.5)
        assert fake.connections == 1

Faults: ``fake.reject_next(401 | 429 | 400, times=1)``, ``fake.drop_after(seconds)``
(abrupt TCP close once a connection has received that much audio), the idle
timeout (``config.idle_timeout`` without audio or a text message closes with
1011 and a NET-0001 reason), and ``config.ignore_finalize`` (never answers
``Finalize``). For fault matrices:

- ``fake.slow_start_next(seconds, times=1)``: the next handshakes are answered
  only after ``seconds`` (a client with a shorter connect timeout gives up).
- ``fake.refuse_for(seconds, status=429)``: a 429 storm — every handshake in the
  next ``seconds`` is refused with a real HTTP ``status`` and Deepgram's JSON
  error body (Deepgram sends no ``Retry-After``); ``await fake.wait_refusals_over()``.
- ``fake.stall_after(seconds_of_audio, duration=math.inf)``: once a connection has
  received that much audio the server goes silent on it (it still reads audio;
  what it would have sent is held for ``duration``, then sent in order).
- ``fake.malform_next(times=1, kind="json" | "shape")``: the next server messages
  go out as a text frame that is not JSON, or is JSON of the wrong shape.

Counters: ``connections``, ``audio_bytes``, ``messages`` (client
messages by type), ``sent`` (server messages by type, ``malformed`` for injected
frames), ``query_params``, ``rejected`` (statuses), ``close_codes`` and
``injected`` (the matrix faults actually served, by name);
``await fake.wait_connections(n)`` returns once ``n`` handshakes were accepted.
"""

from __future__ import annotations

import collections
import hashlib
import json
import math
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import partial
from typing import Any

import attrs
import numpy as np
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from ..providers import deepgram_messages as dm
from .change import ChangeSignal
from .faults import RefusalWindow
from .loopback import serve_streams

PATH = "/v1/listen"
FRAME_BYTES = 640
FRAME_S = 0.02
IDLE_REASON = (
    "NET-0001: Deepgram did not receive audio data or a text message within the timeout window"
)
_ERROR_CODES = {401: "INVALID_AUTH", 400: "Bad Request", 429: "TOO_MANY_REQUESTS", 404: "NOT_FOUND"}
_MALFORMED = {
    "json": '{"type": "Results", "channel": {"alternatives": [{"transcript": "hel',
    "shape": '{"type": "Results", "channel": "not an object", "is_final": "maybe"}',
}

Script = Sequence[str] | Callable[[int], str]


@attrs.frozen
class FakeDeepgramConfig:
    api_key: str = "fake-deepgram-key"
    script: Script = ("hello world",)
    final_latency: float = 0.15
    interim_latency: float = 0.05
    idle_timeout: float = 10.0
    speech_threshold_dbfs: float = -35.0
    word_interval: float = 0.25
    silence_final_interval: float | None = 3.0
    """Seconds of silence after which an empty final is sent, as Deepgram does."""
    confidence: float = 0.98
    ignore_finalize: bool = False
    """Fault: never answer ``Finalize`` (tests a client's finalize timeout)."""


@attrs.define(eq=False)
class FakeDeepgram:
    """The running fake: its address, what it saw, and fault injection."""

    config: FakeDeepgramConfig
    url: str = ""
    connections: int = 0
    audio_bytes: int = 0
    messages: collections.Counter[str] = attrs.Factory(collections.Counter)
    """Client messages by type: ``audio``, ``KeepAlive``, ``Finalize``, ``CloseStream``."""
    sent: collections.Counter[str] = attrs.Factory(collections.Counter)
    query_params: list[dict[str, str]] = attrs.Factory(list)
    rejected: list[int] = attrs.Factory(list)
    close_codes: list[int] = attrs.Factory(list)
    injected: collections.Counter[str] = attrs.Factory(collections.Counter)
    """Faults actually served: ``slow_start``, ``refused``, ``reset`` (``drop_after``),
    ``stall``, ``malformed``."""
    _rejects: collections.deque[int] = attrs.Factory(collections.deque)
    _drop_at: float | None = None
    _slow_starts: collections.deque[float] = attrs.Factory(collections.deque)
    _refuse: RefusalWindow = attrs.Factory(RefusalWindow)
    _stall: tuple[float, float] | None = None
    _malformed: collections.deque[str] = attrs.Factory(collections.deque)
    _utterances: dict[bytes, int] = attrs.Factory(dict)
    _accepted: ChangeSignal = attrs.Factory(ChangeSignal)

    @property
    def api_key(self) -> str:
        return self.config.api_key

    def reject_next(self, status: int, times: int = 1) -> None:
        """Refuse the next ``times`` handshakes with HTTP ``status``."""
        self._rejects.extend([status] * times)

    def drop_after(self, seconds_of_audio: float) -> None:
        """Cut the TCP connection once a connection has received this much audio."""
        self._drop_at = seconds_of_audio

    def slow_start_next(self, seconds: float, times: int = 1) -> None:
        """Answer the next ``times`` handshakes only after ``seconds``."""
        self._slow_starts.extend([seconds] * times)

    def refuse_for(self, seconds: float, status: int = 429) -> None:
        """Refuse every handshake with HTTP ``status`` for the next ``seconds``."""
        self._refuse.open(seconds, status)

    async def wait_connections(self, count: int = 1) -> None:
        """Return once ``count`` handshakes in all have been accepted."""
        await self._accepted.wait_until(lambda: self.connections >= count)

    async def wait_refusals_over(self) -> None:
        """Return once a ``refuse_for`` window has passed."""
        await self._refuse.wait_over()

    def stall_after(self, seconds_of_audio: float, duration: float = math.inf) -> None:
        """Go silent on the next connection that has received this much audio."""
        self._stall = (seconds_of_audio, duration)

    def malform_next(self, times: int = 1, kind: str = "json") -> None:
        """Replace the next ``times`` server messages with malformed text frames."""
        if kind not in _MALFORMED:
            raise ValueError(f"kind must be one of {sorted(_MALFORMED)}")
        self._malformed.extend([kind] * times)

    def transcript_for(self, first_frame: bytes) -> str:
        index = self._utterances.setdefault(
            hashlib.sha1(first_frame).digest(), len(self._utterances)
        )
        script = self.config.script
        if callable(script):
            return script(index)
        return script[index % len(script)] if script else ""

    def check(self, request: WebSocketRequest) -> int | dm.ListenOptions:
        """The HTTP status that refuses this handshake, or the stream's options."""
        target = urllib.parse.urlsplit(request.path)
        params = dict(urllib.parse.parse_qsl(target.query))
        self.query_params.append(params)
        if self._rejects:
            return self._rejects.popleft()
        refused = self._refuse.status_now()
        if refused is not None:
            self.injected["refused"] += 1
            return refused
        if target.path != PATH:
            return 404
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if headers.get("authorization") != f"Token {self.config.api_key}":
            return 401
        try:
            options = dm.parse_listen_query(params)
        except ValueError:
            return 400
        if (options.encoding, options.sample_rate, options.channels) != ("linear16", 16_000, 1):
            return 400  # the only format this fake decodes
        return options


@attrs.define
class _Utterance:
    start: float
    tokens: list[str]
    end: float
    speech_s: float = 0.0
    silence_s: float = 0.0
    revealed: int = 0


Output = tuple[bool, dict[str, Any]]
"""(is a final result, message): finals wait ``final_latency``, the rest less."""


class _Recognizer:
    """Turns one connection's audio and controls into server messages (no I/O)."""

    def __init__(self, fake: FakeDeepgram, options: dm.ListenOptions) -> None:
        self._fake = fake
        self._cfg = fake.config
        self._opts = options
        self._threshold = (10 ** (self._cfg.speech_threshold_dbfs / 20) * 32768) ** 2
        self._residual = bytearray()
        self._frames = 0
        self._cursor = 0.0
        self._utt: _Utterance | None = None
        self._last_word_end: float | None = None
        self._sha = hashlib.sha256()
        self.request_id = str(uuid.uuid4())
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, options.model))

    @property
    def now(self) -> float:
        return round(self._frames * FRAME_S, 3)

    def feed(self, data: bytes) -> list[Output]:
        self._sha.update(data)
        self._residual += data
        out: list[Output] = []
        while len(self._residual) >= FRAME_BYTES:
            frame = bytes(self._residual[:FRAME_BYTES])
            del self._residual[:FRAME_BYTES]
            out += self._frame(frame)
        return out

    def finalize(self) -> list[Output]:
        return [self._final(speech_final=False, from_finalize=True)]

    def close(self) -> list[Output]:
        out = [self._final(speech_final=False)] if self._utt is not None else []
        created = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        meta = dm.metadata_message(
            request_id=self.request_id,
            duration=self.now,
            created=created,
            sha256=self._sha.hexdigest(),
            model_uuid=self.model_uuid,
        )
        return [*out, (False, meta)]

    def _frame(self, frame: bytes) -> list[Output]:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        start = self.now
        self._frames += 1
        if float(np.mean(samples**2)) >= self._threshold:
            return self._speech(frame, start)
        return self._silence()

    def _speech(self, frame: bytes, start: float) -> list[Output]:
        out: list[Output] = []
        utt = self._utt
        if utt is None:
            tokens = self._fake.transcript_for(frame).split()
            utt = self._utt = _Utterance(start=start, tokens=tokens, end=start)
            self._last_word_end = None
            if self._opts.vad_events:
                out.append((False, dm.speech_started_message(start)))
        utt.speech_s += FRAME_S
        utt.silence_s = 0.0
        utt.end = self.now
        shown = min(len(utt.tokens), int(utt.speech_s / self._cfg.word_interval + 1e-9))
        if shown > utt.revealed and self._opts.interim_results:
            utt.revealed = shown
            words = self._words(utt, shown, slot=self._cfg.word_interval)
            out.append((False, self._results(words, is_final=False)))
        return out

    def _silence(self) -> list[Output]:
        now = self.now
        if self._utt is not None:
            self._utt.silence_s += FRAME_S
            endpointing = self._opts.endpointing_ms
            if endpointing is not None and self._utt.silence_s >= endpointing / 1000 - 1e-9:
                return [self._final(speech_final=True)]
            return []
        gap = self._opts.utterance_end_ms
        if self._last_word_end is not None and gap is not None:
            if now - self._last_word_end >= gap / 1000 - 1e-9:
                last, self._last_word_end = self._last_word_end, None
                return [(False, dm.utterance_end_message(last))]
            return []
        interval = self._cfg.silence_final_interval
        if interval is not None and now - self._cursor >= interval - 1e-9:
            return [self._final(speech_final=False)]
        return []

    def _final(self, *, speech_final: bool, from_finalize: bool = False) -> Output:
        utt, self._utt = self._utt, None
        words: list[dm.Word] = []
        if utt is not None and utt.tokens:
            words = self._words(utt, len(utt.tokens), slot=(utt.end - utt.start) / len(utt.tokens))
            if self._opts.utterance_end_ms is not None:
                self._last_word_end = words[-1].end
        message = self._results(
            words, is_final=True, speech_final=speech_final, from_finalize=from_finalize
        )
        self._cursor = self.now
        return (True, message)

    def _words(self, utt: _Utterance, count: int, slot: float) -> list[dm.Word]:
        words = []
        for i, token in enumerate(utt.tokens[:count]):
            begin = utt.start + i * slot
            words.append(
                dm.Word(
                    word=token.strip(".,!?;:\"'").lower(),
                    punctuated_word=token,
                    start=round(begin, 3),
                    end=round(min(begin + 0.9 * slot, utt.end), 3),
                    confidence=self._cfg.confidence,
                )
            )
        return words

    def _results(self, words: list[dm.Word], **flags: bool) -> dict[str, Any]:
        return dm.results_message(
            words,
            start=self._cursor,
            duration=round(self.now - self._cursor, 3),
            request_id=self.request_id,
            model_uuid=self.model_uuid,
            punctuated=self._opts.punctuate or self._opts.smart_format,
            **flags,
        )


@attrs.frozen
class _Outgoing:
    due: float
    text: str | None = None
    kind: str = ""
    close: tuple[int, str] | None = None


async def _writer(
    fake: FakeDeepgram, ws: WebSocketConnection, queue: trio.MemoryReceiveChannel[_Outgoing]
) -> None:
    """Sends each message when its latency has passed; closes when told to."""
    async with queue:
        async for item in queue:
            await trio.sleep_until(item.due)
            try:
                if item.close is not None:
                    fake.close_codes.append(item.close[0])
                    await ws.aclose(*item.close)
                    return
                assert item.text is not None
                await ws.send_message(item.text)
                fake.sent[item.kind] += 1
            except ConnectionClosed:
                return


class _Schedule:
    """Latency without reordering: a message is never due before the previous one."""

    def __init__(self, fake: FakeDeepgram) -> None:
        self._fake = fake
        self._cfg = fake.config
        self._last = 0.0

    def hold(self, until: float) -> None:
        """Send nothing before ``until`` (a stalled server)."""
        self._last = max(self._last, until)

    def item(self, output: Output) -> _Outgoing:
        is_final, message = output
        latency = self._cfg.final_latency if is_final else self._cfg.interim_latency
        self._last = max(trio.current_time() + latency, self._last)
        if self._fake._malformed:
            text = _MALFORMED[self._fake._malformed.popleft()]
            self._fake.injected["malformed"] += 1
            return _Outgoing(due=self._last, text=text, kind="malformed")
        return _Outgoing(due=self._last, text=json.dumps(message), kind=message["type"])

    def close(self, code: int, reason: str) -> _Outgoing:
        self._last = max(trio.current_time(), self._last)
        return _Outgoing(due=self._last, close=(code, reason))


async def _reader(
    fake: FakeDeepgram,
    ws: WebSocketConnection,
    stream: trio.abc.Stream,
    recognizer: _Recognizer,
    queue: trio.MemorySendChannel[_Outgoing],
) -> bool:
    """Consume client messages; True when the writer should finish its queue."""
    schedule = _Schedule(fake)
    received = 0
    while True:
        with trio.move_on_after(fake.config.idle_timeout) as idle:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return False
        if idle.cancelled_caught:
            await queue.send(schedule.close(1011, IDLE_REASON))
            return True
        if isinstance(message, bytes):
            fake.messages["audio"] += 1
            if fake._drop_at is not None and (received + len(message)) / 32_000 >= fake._drop_at:
                fake._drop_at = None
                fake.injected["reset"] += 1
                fake.close_codes.append(1006)
                await stream.aclose()  # like a network failure: no close frame
                return False
            received += len(message)
            if fake._stall is not None and received / 32_000 >= fake._stall[0]:
                schedule.hold(trio.current_time() + fake._stall[1])
                fake._stall = None
                fake.injected["stall"] += 1
            fake.audio_bytes += len(message)
            outputs = recognizer.feed(message)
        else:
            try:
                kind = dm.parse_control(message)
            except ValueError as exc:
                await queue.send(schedule.close(1008, f"DATA-0000: {exc}"))
                return True
            fake.messages[kind] += 1
            outputs = []
            if kind == "Finalize" and not fake.config.ignore_finalize:
                outputs = recognizer.finalize()
            elif kind == "CloseStream":
                for output in recognizer.close():
                    await queue.send(schedule.item(output))
                await queue.send(schedule.close(1000, "stream closed"))
                return True
        for output in outputs:
            await queue.send(schedule.item(output))


async def _handle_connection(fake: FakeDeepgram, stream: trio.abc.Stream) -> None:
    try:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(10) as handshake:
                request = await wrap_server_stream(nursery, stream)
            if handshake.cancelled_caught:
                await stream.aclose()
                nursery.cancel_scope.cancel()
                return
            if fake._slow_starts:
                fake.injected["slow_start"] += 1
                await trio.sleep(fake._slow_starts.popleft())
            status = fake.check(request)
            if isinstance(status, int):
                fake.rejected.append(status)
                body = {"err_code": _ERROR_CODES.get(status, "ERROR"), "err_msg": f"HTTP {status}"}
                await request.reject(status, body=json.dumps(body).encode())
                await stream.aclose()
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            fake.connections += 1
            fake._accepted.notify()
            recognizer = _Recognizer(fake, status)
            send, receive = trio.open_memory_channel[_Outgoing](64)
            async with trio.open_nursery() as inner:
                inner.start_soon(_writer, fake, ws, receive)
                async with send:
                    finish = await _reader(fake, ws, stream, recognizer, send)
                if not finish:
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
        pass  # the client went away; a real server shrugs too


@asynccontextmanager
async def serve_fake_deepgram(
    config: FakeDeepgramConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeDeepgram]:
    fake = FakeDeepgram(config or FakeDeepgramConfig())
    async with serve_streams(partial(_handle_connection, fake), host, port) as bound:
        fake.url = f"ws://{host}:{bound}{PATH}"
        yield fake
