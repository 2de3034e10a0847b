"""A protocol-faithful fake of OpenAI's Realtime API (GA dialect) over a real socket.

What it checks and does, as the service does:

- **Handshake**: ``GET /v1/realtime?model=...`` with ``Authorization: Bearer <key>``
  (401 otherwise; 400 without a model), then ``session.created``.
- **session.update** is validated by the shared codec (``session.type`` required,
  PCM16 24 kHz only, ``server_vad`` parameters) and echoed as ``session.updated``;
  a bad one gets an ``invalid_request_error`` with the server's code and param.
- **Turns**: manual (``input_audio_buffer.commit`` — at least 100 ms, else
  ``input_audio_buffer_commit_empty`` — then ``response.create``) or server VAD:
  20 ms frames louder than the threshold (``threshold`` 0..1 maps to −50..−20 dBFS)
  are speech; ``speech_started`` carries ``audio_start_ms`` less the prefix padding,
  ``silence_duration_ms`` of quiet ends it (``speech_stopped``, ``committed``, the user
  item) and, with ``create_response``, starts a response; with ``interrupt_response``
  a speech start cancels the active response (``status_details.reason =
  "turn_detected"``). The user item's transcription completes *after* the response
  that answers it has started, as the service's asynchronous transcription does.
- **Responses** follow the GA event order (output item added, content part, audio and
  transcript deltas, done events, ``response.done`` with the output items), audio
  generated ``speed`` times faster than real time, several items per response, and
  scripted function calls. Exactly one response is active: another
  ``response.create`` gets ``conversation_already_has_active_response`` with the
  real text; ``response.cancel`` without one gets ``response_cancel_not_active``.
- **Truncate/delete**: only assistant audio items can be truncated ("Only model output
  audio messages can be truncated"); past the audio generated for the item: "Audio
  content of X ms is already shorter than Y ms"; an unknown item: "... does not
  exist". The texts are the ones users of the service report (issue 22 cites them).
- **Session cap**: ``session_cap_s`` after the handshake: ``error`` ``session_expired``
  ("Your session hit the maximum duration of N minutes.") then close 1001.

Faults: ``reject_next(status)``; ``drop_in_next_response()`` (an abrupt TCP close after
the next response's first audio delta); ``stall_next_response(seconds)``;
``malform_next(times)`` (the next server frames are not JSON).

Counters: ``connections``, ``received`` (client events by type), ``sent`` (server
events by type), ``truncations`` and ``deletions`` (what was applied), ``errors``
(codes sent), ``sessions`` (the ``SessionConfig`` of each ``session.update``),
``conversation_log`` (every item created on every connection, for replay checks).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import math
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial

import attrs
import numpy as np
import trio
from trio_websocket import (
    ConnectionClosed,
    WebSocketConnection,
    WebSocketRequest,
    wrap_server_stream,
)

from ..providers.realtime import codec as rc
from .change import ChangeSignal
from .loopback import serve_streams

PATH = "/v1/realtime"
FRAME_MS = 20
FRAME_BYTES = rc.PCM_RATE * FRAME_MS // 1000 * 2


@attrs.frozen
class Say:
    """An assistant audio item: ``text``, spoken as a tone of ``ms_per_word`` a word."""

    text: str
    ms_per_word: int = 300


@attrs.frozen
class Call:
    """A function call item."""

    name: str
    arguments: str = "{}"


@attrs.frozen
class Scripted:
    """One response: its items in order."""

    items: tuple[Say | Call, ...]


Script = Sequence[Scripted] | Callable[[int], Scripted]


@attrs.frozen
class FakeRealtimeConfig:
    api_key: str = "fake-openai-key"
    script: Script = (Scripted((Say("Hello there."),)),)
    """Responses in order, across connections (a recycled session continues it)."""
    user_transcripts: Sequence[str] = ("hello",)
    """What the transcription of each committed user audio item says, in order."""
    speed: float = 8.0
    """Audio is generated this many times faster than real time."""
    chunk_ms: int = 100
    """Audio per ``response.output_audio.delta``."""
    transcription_delay: float = 0.05
    """The user item's transcription completes this long after its response starts."""
    session_cap_s: float = 3600.0
    auto_follow_up: bool = False
    """Start a response by itself when a ``function_call_output`` item is created (a
    server racing the client's own ``response.create``)."""


@attrs.define
class _Item:
    item_id: str
    kind: rc.ItemKind
    role: rc.Role | None
    audio_ms: int = 0
    """Assistant audio generated for it (truncation is checked against this)."""
    has_audio: bool = False
    transcript: str = ""


@attrs.define(eq=False)
class FakeRealtime:
    """The running fake: its address, what it saw, and fault injection."""

    config: FakeRealtimeConfig
    url: str = ""
    connections: int = 0
    received: collections.Counter[str] = attrs.Factory(collections.Counter)
    sent: collections.Counter[str] = attrs.Factory(collections.Counter)
    errors: list[str] = attrs.Factory(list)
    truncations: list[tuple[str, int]] = attrs.Factory(list)
    deletions: list[str] = attrs.Factory(list)
    sessions: list[rc.SessionConfig] = attrs.Factory(list)
    conversation_log: list[tuple[int, rc.Item]] = attrs.Factory(list)
    """(connection number, item) for every ``conversation.item.create``."""
    models: list[str] = attrs.Factory(list)
    _responses: itertools.count[int] = attrs.Factory(itertools.count)
    _transcripts: itertools.count[int] = attrs.Factory(itertools.count)
    _ids: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _rejects: collections.deque[int] = attrs.Factory(collections.deque)
    _drop_next: bool = False
    _stall_next: float = 0.0
    _malformed: int = 0
    changed: ChangeSignal = attrs.Factory(ChangeSignal)

    @property
    def api_key(self) -> str:
        return self.config.api_key

    def reject_next(self, status: int, times: int = 1) -> None:
        self._rejects.extend([status] * times)

    def drop_in_next_response(self) -> None:
        """Cut the TCP connection (no close frame) after the next response's first audio."""
        self._drop_next = True

    def stall_next_response(self, seconds: float) -> None:
        """Send nothing of the next response for ``seconds``."""
        self._stall_next = seconds

    def malform_next(self, times: int = 1) -> None:
        self._malformed += times

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        await self.changed.wait_until(predicate)

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids):06d}"

    def next_response(self) -> Scripted:
        index = next(self._responses)
        script = self.config.script
        if callable(script):
            return script(index)
        return script[index % len(script)]

    def next_transcript(self) -> str:
        texts = self.config.user_transcripts
        return texts[next(self._transcripts) % len(texts)] if texts else ""

    def check(self, request: WebSocketRequest) -> int | str:
        """The HTTP status refusing this handshake, or the model asked for."""
        if self._rejects:
            return self._rejects.popleft()
        target = urllib.parse.urlsplit(request.path)
        if target.path != PATH:
            return 404
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        if headers.get("authorization") != f"Bearer {self.config.api_key}":
            return 401
        model = dict(urllib.parse.parse_qsl(target.query)).get("model")
        return model if model else 400


class _Connection:
    """One session: its state machine and the tasks that serve it."""

    def __init__(self, fake: FakeRealtime, ws: WebSocketConnection, stream: trio.abc.Stream):
        self.fake = fake
        self.cfg = fake.config
        self.ws = ws
        self.stream = stream
        self.number = fake.connections
        self.session = rc.SessionConfig(turn_detection=rc.ServerVad())
        self.items: dict[str, _Item] = {}
        self.last_item: str | None = None
        self.buffer_ms = 0
        self.total_ms = 0
        self.residual = bytearray()
        self.speech_item: str | None = None
        self.silence_ms = 0
        self.response: tuple[str, trio.CancelScope] | None = None
        self.cancel_reason = ""
        self.out_tx, self.out_rx = trio.open_memory_channel[str | None](256)
        self.nursery: trio.Nursery | None = None
        self.flushed = trio.Event()

    # ------------------------------------------------------------------ sending

    async def emit(self, event: rc.ServerEvent) -> None:
        fake = self.fake
        if fake._malformed:
            fake._malformed -= 1
            fake.sent["malformed"] += 1
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.out_tx.send('{"type": "response.output_audio.delta", "delta": ')
            return
        name = rc.encode_server(event, fake.new_id("event"))
        kind = name.split('"type":"', 1)[1].split('"', 1)[0]
        fake.sent[kind] += 1
        if isinstance(event, rc.ErrorReport) and event.code:
            fake.errors.append(event.code)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.out_tx.send(name)  # the writer is gone with the socket: dropped

    async def error(
        self, message: str, code: str | None, param: str | None = None, event_id: str | None = None
    ) -> None:
        await self.emit(rc.ErrorReport("invalid_request_error", message, code, param, event_id))

    async def writer(self) -> None:
        async with self.out_rx:
            async for text in self.out_rx:
                if text is None:
                    return
                try:
                    await self.ws.send_message(text)
                except ConnectionClosed:
                    return

    # ------------------------------------------------------------------ items

    async def add_item(self, item: _Item) -> None:
        self.items[item.item_id] = item
        previous, self.last_item = self.last_item, item.item_id
        await self.emit(rc.ItemAdded(item.item_id, item.kind, item.role, previous))
        await self.emit(rc.ItemAdded(item.item_id, item.kind, item.role, previous, done=True))

    # ------------------------------------------------------------------ input

    async def append(self, pcm: bytes) -> None:
        self.residual += pcm
        vad = self.session.turn_detection
        while len(self.residual) >= FRAME_BYTES:
            frame = bytes(self.residual[:FRAME_BYTES])
            del self.residual[:FRAME_BYTES]
            start = self.total_ms
            self.total_ms += FRAME_MS
            self.buffer_ms += FRAME_MS
            if vad is not None:
                await self.vad_frame(frame, start, vad)

    async def vad_frame(self, frame: bytes, start_ms: int, vad: rc.ServerVad) -> None:
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
        rms = math.sqrt(float(np.mean(samples**2))) / 32768
        dbfs = 20 * math.log10(rms) if rms > 0 else -120.0
        speech = dbfs >= -50 + 30 * vad.threshold
        if self.speech_item is None:
            if not speech:
                return
            self.speech_item = self.fake.new_id("item")
            self.silence_ms = 0
            begin = max(0, start_ms - vad.prefix_padding_ms)
            await self.emit(rc.SpeechStarted(self.speech_item, begin))
            if vad.interrupt_response and self.response is not None:
                self.cancel("turn_detected")
            return
        if speech:
            self.silence_ms = 0
            return
        self.silence_ms += FRAME_MS
        if self.silence_ms < vad.silence_duration_ms:
            return
        item_id, self.speech_item = self.speech_item, None
        await self.emit(rc.SpeechStopped(item_id, self.total_ms))
        await self.commit(item_id)
        if vad.create_response:
            await self.start_response()

    async def commit(self, item_id: str | None = None, event_id: str | None = None) -> bool:
        if self.buffer_ms < 100:
            await self.error(
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {self.buffer_ms:.2f}ms of audio.",
                "input_audio_buffer_commit_empty",
                None,
                event_id,
            )
            return False
        item_id = item_id or self.fake.new_id("item")
        self.buffer_ms = 0
        self.residual.clear()
        await self.emit(rc.InputCommitted(item_id, self.last_item))
        await self.add_item(_Item(item_id, "message", "user"))
        assert self.nursery is not None
        transcript = self.fake.next_transcript()
        self.nursery.start_soon(self.transcribe, item_id, transcript)
        return True

    async def transcribe(self, item_id: str, transcript: str) -> None:
        """Asynchronous, as the service's: after the response to it has started."""
        await trio.sleep(self.cfg.transcription_delay)
        self.items[item_id].transcript = transcript
        await self.emit(rc.UserTranscriptDelta(item_id, transcript))
        await self.emit(rc.UserTranscriptCompleted(item_id, transcript))

    # ------------------------------------------------------------------ responses

    async def start_response(self, event_id: str | None = None) -> None:
        if self.response is not None:
            await self.error(
                f"Conversation already has an active response in progress: {self.response[0]}."
                " Wait until the response is finished before creating a new one.",
                "conversation_already_has_active_response",
                None,
                event_id,
            )
            return
        response_id = self.fake.new_id("resp")
        scope = trio.CancelScope()
        self.response = (response_id, scope)
        self.cancel_reason = ""
        assert self.nursery is not None
        self.nursery.start_soon(self.run_response, response_id, scope, self.fake.next_response())

    def cancel(self, reason: str) -> None:
        if self.response is not None:
            self.cancel_reason = reason
            self.response[1].cancel()

    async def run_response(
        self, response_id: str, scope: trio.CancelScope, script: Scripted
    ) -> None:
        fake = self.fake
        await self.emit(rc.ResponseCreated(response_id))
        output: list[rc.DoneItem] = []
        current: list[tuple[int, str, Say | Call]] = []  # the item being generated
        with scope:
            if fake._stall_next:
                stall, fake._stall_next = fake._stall_next, 0.0
                await trio.sleep(stall)
            for index, part in enumerate(script.items):
                item_id = fake.new_id("item")
                if isinstance(part, Call):
                    call_id = fake.new_id("call")
                    current[:] = [(index, item_id, part)]
                    await self.call_item(response_id, index, item_id, call_id, part)
                    output.append(
                        rc.DoneItem(
                            item_id,
                            "function_call",
                            "completed",
                            "",
                            call_id,
                            part.name,
                            part.arguments,
                        )
                    )
                else:
                    current[:] = [(index, item_id, part)]
                    await self.say_item(response_id, index, item_id, part)
                    output.append(rc.DoneItem(item_id, "message", "completed", part.text))
                current.clear()
        if scope.cancelled_caught:
            if current:
                index, item_id, part = current[0]
                item = self.items.get(item_id)
                said = item.transcript if item is not None else ""
                if isinstance(part, Say) and item is not None:
                    where = (response_id, item_id, index, 0)
                    await self.emit(rc.AudioDone(*where))
                    await self.emit(rc.TranscriptDone(*where, said))
                    await self.emit(rc.ContentPart(*where, said, done=True))
                    await self.emit(
                        rc.OutputItemAdded(
                            response_id, index, item_id, "message", done=True, status="incomplete"
                        )
                    )
                    output.append(rc.DoneItem(item_id, "message", "incomplete", said))
            status: rc.ResponseStatus = "cancelled"
            await self.emit(rc.ResponseDone(response_id, status, self.cancel_reason, tuple(output)))
        else:
            await self.emit(rc.ResponseDone(response_id, "completed", None, tuple(output)))
        self.response = None
        fake.changed.notify()

    async def say_item(self, response_id: str, index: int, item_id: str, say: Say) -> None:
        fake = self.fake
        await self.emit(rc.OutputItemAdded(response_id, index, item_id, "message"))
        item = _Item(item_id, "message", "assistant", has_audio=True)
        await self.add_item_added_only(item)
        where = (response_id, item_id, index, 0)
        await self.emit(rc.ContentPart(*where))
        words = say.text.split()
        total_ms = max(1, len(words)) * say.ms_per_word
        chunk_ms = self.cfg.chunk_ms
        sent_ms = 0
        word = 0
        start = trio.current_time()
        while sent_ms < total_ms:
            # Transcript deltas run ahead of the audio, as the service's do.
            while word < len(words) and word * say.ms_per_word <= sent_ms:
                delta = (" " if word else "") + words[word]
                item.transcript += delta
                await self.emit(rc.TranscriptDelta(*where, delta))
                word += 1
            ms = min(chunk_ms, total_ms - sent_ms)
            pcm = _tone(sent_ms, ms)
            item.audio_ms += ms
            await self.emit(rc.AudioDelta(*where, pcm))
            if fake._drop_next:
                fake._drop_next = False
                await self.stream.aclose()  # like a network failure: no close frame
                assert self.nursery is not None
                self.nursery.cancel_scope.cancel()  # this session is gone
                return
            sent_ms += ms
            await trio.sleep_until(start + sent_ms / 1000 / self.cfg.speed)
        while word < len(words):
            delta = (" " if word else "") + words[word]
            item.transcript += delta
            await self.emit(rc.TranscriptDelta(*where, delta))
            word += 1
        await self.emit(rc.AudioDone(*where))
        await self.emit(rc.TranscriptDone(*where, item.transcript))
        await self.emit(rc.ContentPart(*where, item.transcript, done=True))
        await self.emit(
            rc.OutputItemAdded(
                response_id, index, item_id, "message", done=True, status="completed"
            )
        )
        await self.emit(rc.ItemAdded(item_id, "message", "assistant", None, done=True))

    async def add_item_added_only(self, item: _Item) -> None:
        self.items[item.item_id] = item
        previous, self.last_item = self.last_item, item.item_id
        await self.emit(rc.ItemAdded(item.item_id, item.kind, item.role, previous))

    async def call_item(
        self, response_id: str, index: int, item_id: str, call_id: str, call: Call
    ) -> None:
        await self.emit(
            rc.OutputItemAdded(response_id, index, item_id, "function_call", call_id, call.name)
        )
        await self.add_item_added_only(_Item(item_id, "function_call", None))
        await self.emit(rc.ArgumentsDelta(response_id, item_id, index, call_id, call.arguments))
        await self.emit(
            rc.ArgumentsDone(response_id, item_id, index, call_id, call.name, call.arguments)
        )
        await self.emit(
            rc.OutputItemAdded(
                response_id, index, item_id, "function_call", call_id, call.name, True, "completed"
            )
        )
        await self.emit(rc.ItemAdded(item_id, "function_call", None, None, done=True))

    # ------------------------------------------------------------------ client events

    async def handle(self, text: str | bytes) -> None:
        fake = self.fake
        try:
            event, event_id = rc.decode_client(text)
        except rc.InvalidEvent as exc:
            fake.received["invalid"] += 1
            await self.error(exc.message, exc.code, exc.param)
            return
        kind = rc.encode_client(event).split('"type":"', 1)[1].split('"', 1)[0]
        fake.received[kind] += 1
        if isinstance(event, rc.SessionUpdate):
            self.session = event.session
            fake.sessions.append(event.session)
            self.speech_item = None
            await self.emit(rc.SessionUpdated(event.session))
        elif isinstance(event, rc.AudioAppend):
            await self.append(event.pcm)
        elif isinstance(event, rc.AudioCommit):
            await self.commit(event_id=event_id)
        elif isinstance(event, rc.AudioClear):
            self.buffer_ms = 0
            self.residual.clear()
            self.speech_item = None
            await self.emit(rc.InputCleared())
        elif isinstance(event, rc.ItemCreate):
            fake.conversation_log.append((self.number, event.item))
            await self.create_item(event.item, event.item_id)
        elif isinstance(event, rc.ItemTruncate):
            await self.truncate(event, event_id)
        elif isinstance(event, rc.ItemDelete):
            if event.item_id not in self.items:
                await self.error(
                    f"Error deleting item: the item with id '{event.item_id}' does not exist.",
                    "item_delete_invalid_item_id",
                    "item_id",
                    event_id,
                )
            else:
                del self.items[event.item_id]
                fake.deletions.append(event.item_id)
                await self.emit(rc.ItemDeleted(event.item_id))
        elif isinstance(event, rc.ResponseCreate):
            await self.start_response(event_id)
        elif isinstance(event, rc.ResponseCancel):
            if self.response is None or (
                event.response_id is not None and event.response_id != self.response[0]
            ):
                await self.error(
                    "Cancellation failed: no active response found",
                    "response_cancel_not_active",
                    None,
                    event_id,
                )
            else:
                self.cancel("client_cancelled")
        fake.changed.notify()

    async def create_item(self, item: rc.Item, item_id: str | None) -> None:
        new_id = item_id or self.fake.new_id("item")
        if isinstance(item, rc.TextItem):
            stored = _Item(new_id, "message", item.role, transcript=item.text)
        elif isinstance(item, rc.FunctionCallItem):
            stored = _Item(new_id, "function_call", None)
        else:
            stored = _Item(new_id, "function_call_output", None)
        await self.add_item(stored)
        follow_up = isinstance(item, rc.FunctionOutputItem) and self.cfg.auto_follow_up
        if follow_up and self.response is None:
            await self.start_response()

    async def truncate(self, event: rc.ItemTruncate, event_id: str | None) -> None:
        item = self.items.get(event.item_id)
        if item is None:
            await self.error(
                f"Error truncating item: the item with id '{event.item_id}' does not exist.",
                "item_truncate_invalid_item_id",
                "item_id",
                event_id,
            )
        elif item.role != "assistant" or not item.has_audio or item.audio_ms == 0:
            await self.error(
                "Only model output audio messages can be truncated",
                "unsupported_content_type",
                None,
                event_id,
            )
        elif event.audio_end_ms > item.audio_ms:
            await self.error(
                f"Audio content of {item.audio_ms}ms is already shorter than "
                f"{event.audio_end_ms}ms",
                "invalid_value",
                "audio_end_ms",
                event_id,
            )
        else:
            item.audio_ms = event.audio_end_ms
            item.transcript = ""  # the service drops the transcript of a truncated item
            self.fake.truncations.append((event.item_id, event.audio_end_ms))
            await self.emit(
                rc.ItemTruncated(event.item_id, event.content_index, event.audio_end_ms)
            )

    async def reader(self) -> None:
        while True:
            try:
                message = await self.ws.get_message()
            except ConnectionClosed:
                return
            await self.handle(message)

    async def expire(self) -> None:
        cap = self.cfg.session_cap_s
        await trio.sleep(cap)
        minutes = f"{cap / 60:g}"
        text = f"Your session hit the maximum duration of {minutes} minutes."
        await self.emit(rc.ErrorReport("invalid_request_error", text, "session_expired"))
        await self.out_tx.send(None)
        # Let the writer flush, then close as the service does.
        with trio.move_on_after(1):
            await self.flushed.wait()
        with trio.move_on_after(1):
            await self.ws.aclose(1001, text)


async def _handle_connection(fake: FakeRealtime, stream: trio.abc.Stream) -> None:
    try:
        async with trio.open_nursery() as nursery:
            with trio.move_on_after(10) as handshake:
                request = await wrap_server_stream(nursery, stream)
            if handshake.cancelled_caught:
                await stream.aclose()
                nursery.cancel_scope.cancel()
                return
            checked = fake.check(request)
            if isinstance(checked, int):
                body = b'{"error": {"type": "invalid_request_error", "code": "invalid_api_key"}}'
                await request.reject(checked, body=body)
                await stream.aclose()
                nursery.cancel_scope.cancel()
                return
            ws = await request.accept()
            fake.connections += 1
            fake.models.append(checked)
            conn = _Connection(fake, ws, stream)
            fake.changed.notify()
            async with trio.open_nursery() as inner:
                conn.nursery = inner
                expires = int(time.time() + fake.config.session_cap_s)
                await conn.emit(rc.SessionCreated(fake.new_id("sess"), checked, expires))

                async def write() -> None:
                    await conn.writer()
                    conn.flushed.set()

                inner.start_soon(write)
                inner.start_soon(conn.expire)
                await conn.reader()
                inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()
    except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionClosed):
        pass  # the client went away; a real server shrugs too


def _tone(offset_ms: int, ms: int) -> bytes:
    """A 440 Hz tone at −12 dBFS: any audible audio will do, its length is the point."""
    n = rc.PCM_RATE * ms // 1000
    t = (np.arange(n) + rc.PCM_RATE * offset_ms // 1000) / rc.PCM_RATE
    return (np.sin(2 * np.pi * 440 * t) * 8000).astype("<i2").tobytes()


@asynccontextmanager
async def serve_fake_realtime(
    config: FakeRealtimeConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeRealtime]:
    fake = FakeRealtime(config or FakeRealtimeConfig())
    async with serve_streams(partial(_handle_connection, fake), host, port) as bound:
        fake.url = f"ws://{host}:{bound}{PATH}"
        yield fake


__all__ = [
    "Call",
    "FakeRealtime",
    "FakeRealtimeConfig",
    "Say",
    "Scripted",
    "serve_fake_realtime",
]
