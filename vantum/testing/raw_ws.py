"""A WebSocket client on a bare socket, for tests and the soak that must misbehave.

:class:`~vantum.testing.browser_client.BrowserClient` is a well-behaved caller. This
one can do what a broken or hostile peer does: shrink its receive buffer and stop
reading, send frames that are too large, malformed or not UTF-8, ignore the server's
close frame and keep the TCP connection open. It uses wsproto for the handshake and
for reading what the server sends, and builds the frames it sends by hand when asked.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import attrs
import msgpack
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.extensions import Extension, PerMessageDeflate

from ..protocol import events as ev
from ..protocol.ids import new_id

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE = 0x0, 0x1, 0x2, 0x8


def frame_header(opcode: int, length: int, *, fin: bool = True, rsv: int = 0, mask: bytes) -> bytes:
    """The header of a client frame (masked, as RFC 6455 requires of clients)."""
    first = (0x80 if fin else 0) | rsv | opcode
    if length < 126:
        head = struct.pack("!BB", first, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", first, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, length)
    return head + mask


def masked(payload: bytes, mask: bytes, offset: int = 0) -> bytes:
    """``payload`` XOR the masking key, starting ``offset`` bytes into the frame."""
    key = (mask[offset % 4 :] + mask[: offset % 4]) * (len(payload) // 4 + 1)
    n = len(payload)
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key[:n], "big")).to_bytes(n, "big")


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    """A whole client frame with any opcode, payload and RSV bits, valid or not."""
    mask = os.urandom(4)
    return frame_header(opcode, len(payload), fin=fin, rsv=rsv, mask=mask) + masked(payload, mask)


@attrs.define
class Closed:
    """How the server ended the connection, as this client saw it."""

    code: int | None
    """The server's close code; None when the TCP connection ended without a close frame."""
    reason: str = ""
    reset: bool = False
    """The connection was reset (RST) rather than closed."""


class ServerClosed(Exception):
    def __init__(self, closed: Closed) -> None:
        super().__init__(f"server closed the connection: {closed}")
        self.closed = closed


class RawWebSocket:
    def __init__(self, stream: trio.SocketStream, conn: WSConnection) -> None:
        self.stream = stream
        self.conn = conn
        self.session_id = ""
        self.closed: Closed | None = None
        self._events: list[Event] = []
        self._parts: list[bytes | bytearray | str] = []

    @classmethod
    @asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        rcvbuf: int | None = None,
        token: str | None = None,
        deflate: bool = False,
        tcp_connected: Callable[[], None] | None = None,
    ) -> AsyncIterator[RawWebSocket]:
        """Open ``url`` (ws://127.0.0.1:PORT/PATH); ``rcvbuf`` shrinks SO_RCVBUF before
        connecting, so a client that stops reading soon blocks the server's writes.
        ``tcp_connected`` is called once the TCP handshake is done (the kernel queued
        the connection), before the WebSocket one (which needs the server process)."""
        parts = urlsplit(url)
        assert parts.hostname is not None and parts.port is not None
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        await sock.connect((parts.hostname, parts.port))
        if tcp_connected is not None:
            tcp_connected()
        stream = trio.SocketStream(sock)
        conn = WSConnection(ConnectionType.CLIENT)
        headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        extensions: list[Extension] = [PerMessageDeflate()] if deflate else []
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        request = Request(
            host=f"{parts.hostname}:{parts.port}",
            target=target,
            extra_headers=headers,
            extensions=extensions,
        )
        async with stream:
            await stream.send_all(conn.send(request))
            client = cls(stream, conn)
            while True:
                event = await client._next_event()
                if isinstance(event, AcceptConnection):
                    break
                if isinstance(event, RejectConnection):
                    raise ConnectionRefusedError(f"handshake refused: HTTP {event.status_code}")
            yield client

    async def _next_event(self) -> Event:
        while not self._events:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:  # ECONNRESET
                self.closed = self.closed or Closed(None, reset=True)
                raise ServerClosed(self.closed) from None
            if not data:
                self.closed = self.closed or Closed(None)
                raise ServerClosed(self.closed)
            self.conn.receive_data(data)
            self._events.extend(self.conn.events())
        return self._events.pop(0)

    async def receive_message(self) -> bytes | str:
        """The next whole message; raises :class:`ServerClosed` once the server closed."""
        while True:
            event = await self._next_event()
            if isinstance(event, CloseConnection):
                self.closed = Closed(event.code, event.reason or "")
                raise ServerClosed(self.closed)
            if isinstance(event, BytesMessage | TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    parts, self._parts = self._parts, []
                    if isinstance(parts[0], str):
                        return "".join(p for p in parts if isinstance(p, str))
                    return b"".join(p for p in parts if not isinstance(p, str))

    async def receive_event(self) -> dict[str, Any]:
        data = await self.receive_message()
        assert isinstance(data, bytes), data
        event: dict[str, Any] = msgpack.unpackb(data, raw=False)
        return event

    async def read_ack(self) -> dict[str, Any]:
        """Read the server's first event, which must be the ACK; remembers the session id."""
        ack = await self.receive_event()
        assert ack["eventType"] == ev.CONNECTION_ACK, ack
        self.session_id = ack["sessionId"]
        return ack

    async def send_message(self, data: bytes | str) -> None:
        message = TextMessage(data) if isinstance(data, str) else BytesMessage(data)
        await self.stream.send_all(self.conn.send(message))

    async def send_event(self, event_type: str, payload: dict[str, Any]) -> str:
        event_id = new_id()
        frame = {
            "eventType": event_type,
            "eventId": event_id,
            "sessionId": self.session_id,
            "payload": payload,
        }
        await self.send_message(msgpack.packb(frame, use_bin_type=True))
        return event_id

    async def send_raw(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes straight onto the socket: hand-made frames, or the rest of one."""
        await self.stream.send_all(data)

    async def wait_closed(self) -> Closed:
        """Read (and drop) whatever comes until the server ends the connection."""
        while True:
            try:
                await self.receive_message()
            except ServerClosed as exc:
                if exc.closed.code is None or exc.closed.reset:
                    return exc.closed
                # A close frame: the TCP connection should follow; report the frame.
                with trio.move_on_after(5):
                    while True:
                        try:
                            await self._next_event()
                        except ServerClosed:
                            break
                return exc.closed
