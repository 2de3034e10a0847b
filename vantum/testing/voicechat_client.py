"""A client of the original TypeScript Vantum's ``voicechat`` protocol, for tests.

Written from the original's documented protocol (``vantum-backend``'s
``docs/protocol/websocket-protocol.md`` and the event names of ``vantum-shared``),
not from Vantum's code, and doing what the original React frontend does: it waits
for ``connection.ack`` to learn its session id, records with
``voicechat.audio.start`` / ``.chunk`` (256 ms of 16 kHz PCM16 each) / ``.end``,
and plays only ``voicechat.response.*`` frames, ignoring events it does not know.
So a test that passes with it is a test the original frontend would pass.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs

from .frame_client import FrameClient, ServerRefused

# The original's event names (vantum-shared: VOICECHAT_EVENTS), written out here.
CONNECTION_ACK = "connection.ack"
AUDIO_START = "voicechat.audio.start"
AUDIO_CHUNK = "voicechat.audio.chunk"
AUDIO_END = "voicechat.audio.end"
RESPONSE_START = "voicechat.response.start"
RESPONSE_CHUNK = "voicechat.response.chunk"
RESPONSE_COMPLETE = "voicechat.response.complete"
RESPONSE_INTERRUPT = "voicechat.response.interrupt"
RESPONSE_STOP = "voicechat.response.stop"
ERROR = "voicechat.error"

FRONTEND_CHUNK_MS = 256
"""The original frontend sends 4096 samples of 16 kHz audio a chunk."""

ANSWER_ENDS = frozenset({RESPONSE_COMPLETE, RESPONSE_INTERRUPT, RESPONSE_STOP})


def is_error(event_type: str) -> bool:
    """Errors are named ``<request's namespace>.error`` (``toErrorEventType``)."""
    return event_type.endswith(".error")


@attrs.define
class Answer:
    """One answer as the original frontend plays it: ``voicechat.response.start``,
    its chunks, and how it ended."""

    utterance_id: str
    start: dict[str, Any]
    audio: bytearray = attrs.Factory(bytearray)
    sample_rate: int | None = None
    ended_by: dict[str, Any] | None = None
    events: list[dict[str, Any]] = attrs.Factory(list)
    """Every frame from the start to the end, unknown ones included."""

    @property
    def audio_seconds(self) -> float:
        return len(self.audio) / 2 / self.sample_rate if self.sample_rate else 0.0


class VoicechatClient(FrameClient):
    ACK = CONNECTION_ACK

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, url: str, *, origin: str | None = None
    ) -> AsyncIterator[VoicechatClient]:
        """Open ``url`` as ``new WebSocket(url)`` does (a token goes in its query) and
        wait for ``connection.ack``; raises :class:`ServerRefused` on an error instead."""
        headers = [(b"Origin", origin.encode())] if origin is not None else []
        async with cls._open(url, headers) as client:
            yield client

    def _admitted(self, ack: dict[str, Any]) -> None:
        assert ack["payload"] == {"success": True}, ack
        super()._admitted(ack)

    async def expect(self, *event_types: str) -> dict[str, Any]:
        """Skip frames until one of ``event_types`` arrives (errors are not skipped)."""
        while True:
            event = await self.next_event()
            if event["eventType"] in event_types:
                return event
            if is_error(event["eventType"]):
                raise AssertionError(f"error while waiting for {event_types}: {event}")

    async def expect_error(self) -> dict[str, Any]:
        """Skip frames until an error arrives, and return it."""
        while True:
            event = await self.next_event()
            if is_error(event["eventType"]):
                return event

    async def expect_ack(self, event_type: str, event_id: str) -> dict[str, Any]:
        """The ACK of the request ``event_id``: same eventType, eventId and sessionId."""
        ack = await self.expect(event_type)
        assert ack["eventId"] == event_id and ack["payload"] == {"success": True}, ack
        return ack

    async def start(self, sampling_rate: int | None = 16_000, **payload: Any) -> dict[str, Any]:
        """``voicechat.audio.start`` (``samplingRate`` omitted if None); waits for its ACK."""
        if sampling_rate is not None:
            payload["samplingRate"] = sampling_rate
        event_id = await self.send(AUDIO_START, payload)
        return await self.expect_ack(AUDIO_START, event_id)

    async def stream_audio(
        self, pcm: bytes, rate: int = 16_000, *, chunk_ms: int = FRONTEND_CHUNK_MS
    ) -> list[str]:
        """Send ``pcm`` as ``voicechat.audio.chunk`` frames, as fast as they go (no
        ACKs come back for chunks); returns their eventIds."""
        step = 2 * rate * chunk_ms // 1000
        return [
            await self.send(AUDIO_CHUNK, {"audio": pcm[i * step : (i + 1) * step]})
            for i in range(math.ceil(len(pcm) / step))
        ]

    async def end(self) -> dict[str, Any]:
        """``voicechat.audio.end``; waits for its ACK."""
        event_id = await self.send(AUDIO_END, {})
        return await self.expect_ack(AUDIO_END, event_id)

    async def answer_started(self) -> Answer:
        """Wait for the next ``voicechat.response.start``."""
        start = await self.expect(RESPONSE_START)
        return Answer(start["payload"]["utteranceId"], start, events=[start])

    async def play(self, answer: Answer) -> Answer:
        """Collect ``answer``'s chunks until it completes, is interrupted or stopped."""
        while True:
            event = await self.next_event()
            answer.events.append(event)
            kind, p = event["eventType"], event.get("payload") or {}
            if is_error(kind):
                raise AssertionError(f"error during an answer: {event}")
            if kind == RESPONSE_CHUNK and p["utteranceId"] == answer.utterance_id:
                answer.audio += p["audio"]
                answer.sample_rate = p["sampleRate"]
            elif kind in ANSWER_ENDS and p["utteranceId"] == answer.utterance_id:
                answer.ended_by = event
                return answer

    async def next_answer(self) -> Answer:
        """The next answer, played to its end."""
        return await self.play(await self.answer_started())


__all__ = ["FRONTEND_CHUNK_MS", "Answer", "ServerRefused", "VoicechatClient", "is_error"]
