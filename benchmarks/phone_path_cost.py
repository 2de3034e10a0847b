"""The phone transport's own CPU per second of audio, with no sockets at all.

Drives :class:`~vantum.transports.twilio_ws.TwilioTransport` over an in-memory ASGI
pair: one second of answer audio in 40 ms chunks out (JSON, base64, mu-law, marks:
what the transport does before the serving stack's own per-message cost), and one
second of caller audio in (50 ``media`` frames parsed and decoded, then taken to
16 kHz as the audio path does). Prints process CPU and the messages sent. Run it
against another tree for an A/B: ``PYTHONPATH=<tree> python benchmarks/phone_path_cost.py``.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from vantum.audio import resample
from vantum.pipeline import events as e
from vantum.protocol.client_events import InputChunk
from vantum.protocol.twilio import TwilioConnected, TwilioMedia, TwilioStart, encode_inbound
from vantum.transports.twilio_ws import TwilioTransport

STREAM = "MZ" + "1" * 32


class MemoryASGI:
    def __init__(self) -> None:
        self.tx, self.rx = trio.open_memory_channel[dict[str, Any]](10**6)
        self.sent = 0

    def feed(self, text: str) -> None:
        self.tx.send_nowait({"type": "websocket.receive", "text": text})

    async def receive(self) -> dict[str, Any]:
        return await self.rx.receive()

    async def send(self, message: dict[str, Any]) -> None:
        self.sent += 1


async def measure(repeats: int = 5, seconds: int = 20) -> None:
    asgi = MemoryASGI()
    transport = TwilioTransport("bench", asgi.receive, asgi.send)
    asgi.feed(encode_inbound(TwilioConnected()))
    asgi.feed(encode_inbound(TwilioStart(1, STREAM, "AC" + "2" * 32, "CA" + "3" * 32)))
    await transport.receive()
    pcm = b"\x10\x03" * 320  # 40 ms at 8 kHz
    best, messages = float("inf"), 0.0
    for rep in range(repeats):
        sent0, t0 = asgi.sent, time.process_time()
        for s in range(seconds):
            for _ in range(25):
                await transport.send(e.OutputChunk(f"u{rep}-{s}", pcm, 8000))
            await transport.send(e.OutputComplete(f"u{rep}-{s}"))
        best = min(best, (time.process_time() - t0) / seconds)
        messages = (asgi.sent - sent0) / seconds
    print(f"outbound: {best * 1e3:.2f} ms CPU, {messages:.0f} messages per answer-second")
    opener = getattr(resample, "open_resampler", None)  # absent in older trees
    up = opener(8000, 16_000) if opener else resample.StreamResampler(8000, 16_000)
    seq, best = 1, float("inf")
    for _ in range(repeats):
        for chunk in range(50 * seconds):
            seq += 1
            asgi.feed(encode_inbound(TwilioMedia(seq, STREAM, bytes(range(160)), chunk, 0)))
        t0 = time.process_time()
        for _ in range(50 * seconds):
            item = await transport.receive()
            assert isinstance(item, InputChunk)
            up.process(item.audio)
        best = min(best, (time.process_time() - t0) / seconds)
    print(f"inbound: {best * 1e3:.2f} ms CPU per caller-second ({type(up).__name__})")


if __name__ == "__main__":
    trio.run(measure)
