"""A browser-protocol client for tests, benchmarks and ``vantum call``.

It speaks the real wire protocol over a real WebSocket, so a test that passes with
it passes with a browser. Events are read by a background reader into a bounded
channel and also kept in ``events`` for assertions after the fact.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from ..protocol import events as ev
from ..protocol.ids import new_id


@attrs.define
class TurnResult:
    """Everything the client saw from the end of one turn to its ``metrics.turn``."""

    finals: list[str] = attrs.Factory(list)
    interims: list[str] = attrs.Factory(list)
    utterance_ids: list[str] = attrs.Factory(list)
    audio: bytearray = attrs.Factory(bytearray)
    sample_rate: int | None = None
    text: list[str] = attrs.Factory(list)
    errors: list[dict[str, Any]] = attrs.Factory(list)
    metrics: dict[str, Any] = attrs.Factory(dict)
    events: list[dict[str, Any]] = attrs.Factory(list)
    first_audio_at: float | None = None

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0


class ServerRefused(RuntimeError):
    """The server answered the connection with an error event, then closed it."""

    def __init__(self, event: dict[str, Any], close_code: int | None) -> None:
        message = event.get("payload", {}).get("message", "")
        super().__init__(f"{event.get('eventType')}: {message} (close code {close_code})")
        self.event = event
        self.close_code = close_code


class BrowserClient:
    def __init__(self, ws: WebSocketConnection, inbox: trio.MemoryReceiveChannel[dict[str, Any]]):
        self.ws = ws
        self._inbox = inbox
        self.session_id = ""
        self.events: list[dict[str, Any]] = []
        self.close_code: int | None = None

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        token: str | None = None,
        origin: str | None = None,
        max_message_size: int = 1 << 24,
    ) -> AsyncIterator[BrowserClient]:
        """Connect and wait for the ACK; ``token`` goes in ``Authorization: Bearer``.

        Raises :class:`ServerRefused` when the server answers with an error event
        (bad token, capacity, shutdown) instead of the ACK.
        """
        headers: list[tuple[bytes, bytes]] = []
        if token is not None:
            headers.append((b"Authorization", f"Bearer {token}".encode()))
        if origin is not None:
            headers.append((b"Origin", origin.encode()))
        refused: ServerRefused | None = None
        # The socket outlives the reader's nursery, and errors raised out here (a
        # refused handshake, ServerRefused) reach the caller as themselves.
        async with open_websocket_url(
            url, max_message_size=max_message_size, extra_headers=headers
        ) as ws:
            async with trio.open_nursery() as nursery:
                tx, rx = trio.open_memory_channel[dict[str, Any]](4096)
                client = cls(ws, rx)
                nursery.start_soon(client._reader, tx)
                ack = await client.next_event()
                if ack["eventType"] != ev.CONNECTION_ACK:
                    with trio.move_on_after(5):
                        async for _ in client._inbox:  # read on until the server closes
                            pass
                    refused = ServerRefused(ack, client.close_code)
                else:
                    client.session_id = ack["sessionId"]
                    yield client
                nursery.cancel_scope.cancel()
        if refused is not None:
            raise refused

    async def _reader(self, tx: trio.MemorySendChannel[dict[str, Any]]) -> None:
        async with tx:
            while True:
                try:
                    data = await self.ws.get_message()
                except ConnectionClosed as exc:
                    self.close_code = exc.reason.code if exc.reason else None
                    return
                event = (
                    msgpack.unpackb(data, raw=False)
                    if isinstance(data, bytes)
                    else {"eventType": "text", "payload": {"text": data}}
                )
                event["_receivedAt"] = trio.current_time()
                self.events.append(event)
                await tx.send(event)

    async def next_event(self) -> dict[str, Any]:
        """The next server event; raises trio.EndOfChannel once the socket has closed."""
        return await self._inbox.receive()

    async def send(
        self, event_type: str, payload: dict[str, Any], *, session_id: str | None = None
    ) -> str:
        event_id = new_id()
        frame = {
            "eventType": event_type,
            "eventId": event_id,
            "sessionId": self.session_id if session_id is None else session_id,
            "payload": payload,
        }
        await self.ws.send_message(msgpack.packb(frame, use_bin_type=True))
        return event_id

    async def send_raw(self, data: bytes | str) -> None:
        await self.ws.send_message(data)

    async def expect(self, event_type: str) -> dict[str, Any]:
        """Skip events until one of ``event_type`` arrives (errors are not skipped)."""
        while True:
            event = await self.next_event()
            if event["eventType"] == event_type:
                return event
            if ev.is_error(event["eventType"]):
                raise AssertionError(f"error while waiting for {event_type}: {event}")

    async def expect_error(self) -> dict[str, Any]:
        """Skip non-error events until an error event arrives, and return it."""
        while True:
            event = await self.next_event()
            kind = event["eventType"]
            if ev.is_error(kind):
                return event

    async def start(self, sampling_rate: int, **options: Any) -> dict[str, Any]:
        event_id = await self.send(ev.INPUT_START, {"samplingRate": sampling_rate, **options})
        ack = await self.expect(ev.INPUT_START)
        assert ack["eventId"] == event_id, ack
        return ack

    async def stream_audio(
        self, pcm: bytes, rate: int, *, chunk_ms: int = 20, realtime: bool = True
    ) -> None:
        """Send ``pcm`` in chunks, paced like a microphone unless ``realtime`` is False."""
        step = 2 * rate * chunk_ms // 1000
        start = trio.current_time()
        for i in range(math.ceil(len(pcm) / step)):
            await self.send(ev.INPUT_CHUNK, {"audio": pcm[i * step : (i + 1) * step]})
            if realtime:
                await trio.sleep_until(start + (i + 1) * chunk_ms / 1000)

    async def end_turn(self) -> float:
        """Send ``audio.input.end``; returns the trio time it was sent (end of speech)."""
        at = trio.current_time()
        await self.send(ev.INPUT_END, {})
        return at

    async def collect_turn(self) -> TurnResult:
        """Gather events until this turn's ``metrics.turn`` (sent after the answer)."""
        result = TurnResult()
        while True:
            event = await self.next_event()
            result.events.append(event)
            kind, p = event["eventType"], event.get("payload", {})
            if kind == ev.TRANSCRIPT_FINAL:
                result.finals.append(p["transcript"])
            elif kind == ev.TRANSCRIPT_INTERIM:
                result.interims.append(p["transcript"])
            elif kind == ev.RESPONSE_START:
                result.utterance_ids.append(p["utteranceId"])
            elif kind == ev.RESPONSE_TEXT:
                result.text.append(p["text"])
            elif kind == ev.OUTPUT_CHUNK:
                if result.first_audio_at is None:
                    result.first_audio_at = event["_receivedAt"]
                result.audio += p["audio"]
                result.sample_rate = p["sampleRate"]
            elif ev.is_error(kind):
                result.errors.append(event)
            elif kind == ev.METRICS_TURN:
                result.metrics = p
                return result
