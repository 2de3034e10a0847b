"""A webhook receiver over real sockets, as a customer would run one, for tests.

It answers each POST with the status the test sets (``status``), verifies every
signature with :func:`vantum.webhooks.signing.verify` the way docs/integration.md
tells receivers to, and hands each request to the test on ``requests`` (a bounded
channel: a test that stops reading stops the receiver answering, like a stuck
customer server). HTTP/1.1 with keep-alive, written on h11 (Hypercorn's own
parser) so that stopping it closes every connection at once, whatever the clock.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import h11
import trio

from ..webhooks.signing import (
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    verify,
)
from .loopback import serve_streams


@attrs.frozen
class Received:
    event_id: str
    event_type: str
    body: dict[str, Any]
    raw: bytes
    headers: dict[str, str]
    status: int
    """What the receiver answered."""
    signature_error: str | None
    """None: the signature verified."""


class WebhookReceiver:
    def __init__(
        self, secret: bytes, *, status: int = 200, wall_clock: Callable[[], float] = time.time
    ) -> None:
        self.secret = secret
        self.status = status
        """The status the next requests are answered with (tests change it)."""
        self.gate: trio.Event | None = None
        """None: answer at once. An unset Event: hold every request unanswered (a stuck
        receiver) until the test sets it."""
        self.url = ""
        self._wall = wall_clock
        self._tx, self.requests = trio.open_memory_channel[Received](1024)

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        request: h11.Request | None = None
        body = bytearray()
        try:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    request, body = event, bytearray()
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage) and request is not None:
                    status = await self._answer(request, bytes(body))
                    response = h11.Response(status_code=status, headers=[("content-length", "0")])
                    await stream.send_all(conn.send(response) + conn.send(h11.EndOfMessage()))
                    conn.start_next_cycle()
                else:  # closed, paused or a protocol error: hang up
                    return
        except (h11.RemoteProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return

    async def _answer(self, request: h11.Request, raw: bytes) -> int:
        if self.gate is not None:
            await self.gate.wait()
        headers = {k.decode().lower(): v.decode() for k, v in request.headers}
        error: str | None = None
        try:
            verify(self.secret, headers.get(SIGNATURE_HEADER.lower(), ""), raw, now=self._wall())
        except SignatureError as exc:
            error = str(exc)
        status = self.status if error is None else 401
        body = json.loads(raw)
        received = Received(
            headers.get(EVENT_ID_HEADER.lower(), ""),
            str(body.get("type")),
            body,
            raw,
            headers,
            status,
            error,
        )
        await self._tx.send(received)
        return status


@asynccontextmanager
async def open_webhook_receiver(
    secret: bytes,
    *,
    port: int = 0,
    status: int = 200,
    wall_clock: Callable[[], float] = time.time,
    receiver: WebhookReceiver | None = None,
) -> AsyncIterator[WebhookReceiver]:
    """Serve on 127.0.0.1:``port`` for the block; leaving it closes every connection.

    Pass ``receiver`` (with ``port``) to bring the same receiver back after a stop."""
    rx = receiver or WebhookReceiver(secret, status=status, wall_clock=wall_clock)
    async with serve_streams(rx.handle, "127.0.0.1", port) as bound:
        rx.url = f"http://127.0.0.1:{bound}/hooks"
        yield rx
