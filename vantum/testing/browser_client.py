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

from ..protocol import events as ev
from .frame_client import FrameClient, ServerRefused


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


class BrowserClient(FrameClient):
    ACK = ev.CONNECTION_ACK

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
        async with cls._open(url, headers, max_message_size) as client:
            yield client

    def _decode(self, data: bytes | str) -> dict[str, Any]:
        """A text frame (which the server should never send) is kept, not fatal, so a
        test can assert on it; every event is stamped with its arrival time."""
        event: dict[str, Any] = (
            msgpack.unpackb(data, raw=False)
            if isinstance(data, bytes)
            else {"eventType": "text", "payload": {"text": data}}
        )
        event["_receivedAt"] = trio.current_time()
        return event

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


__all__ = ["BrowserClient", "ServerRefused", "TurnResult"]
