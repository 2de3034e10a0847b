"""One accepted ASGI WebSocket, as every carrier's transport needs it.

The rules are the same whatever rides on the socket: a frame over the limit
closes the connection with 1009, a dead socket surfaces as ``PeerGone``, and
closing twice is harmless.

Under ``vantum serve`` the server below enforces the frame limit as frames arrive
and puts deadlines on every write (``vantum.server.connections``); it tells the app
about the connection through :data:`current_connection`. The length check here
remains for any other ASGI server.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol

from ..pipeline.transport import PeerGone
from ..protocol import events as ev

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class ConnectionControl(Protocol):
    """What the server offers about the TCP connection an ASGI task runs on."""

    @property
    def cut_reason(self) -> str | None:
        """Why the server cut the connection (``slow_reader``, ``oversize``, ``bad_frame``,
        ``max_duration``, ``shutdown``), or None."""
        ...

    @property
    def gone(self) -> bool:
        """Nothing sent on the connection can reach the peer any more."""
        ...

    def cut_at(self, deadline: float, reason: str) -> None:
        """End the connection by ``deadline`` (trio time) whatever the peer does."""
        ...


current_connection: ContextVar[ConnectionControl | None] = ContextVar(
    "vantum_connection", default=None
)
"""Set by ``vantum.server.connections`` for the task running a connection; the ASGI
tasks Hypercorn starts from it inherit it. None under other ASGI servers."""


class AsgiWebSocket:
    def __init__(self, receive: ASGIReceive, send: ASGISend, max_frame_bytes: int) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.closed = False
        self.close_code: int | None = None
        """The peer's close code, once it disconnected."""
        self._receive = receive
        self._send = send
        self.connection = current_connection.get()

    async def receive_frame(self) -> bytes | str | None:
        """The next data frame; None for any other ASGI message.

        Raises PeerGone when the peer disconnected (``close_code`` is then set) or
        sent a frame over the limit (after closing the socket with 1009).
        """
        if self.closed:
            raise PeerGone()
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            self.closed = True
            self.close_code = message.get("code")
            raise PeerGone()
        if kind != "websocket.receive":
            return None
        data: bytes | str | None = message.get("bytes")
        if data is None:
            data = message.get("text") or ""
        if len(data) > self.max_frame_bytes:
            reason = f"frame of {len(data)} bytes exceeds {self.max_frame_bytes}"
            await self.close(ev.CLOSE_TOO_BIG, reason)
            raise PeerGone()
        return data

    async def send_frame(self, frame: bytes | str) -> None:
        if self.closed:
            raise PeerGone()
        key = "text" if isinstance(frame, str) else "bytes"
        try:
            await self._send({"type": "websocket.send", key: frame})
        except Exception as exc:  # the ASGI server raises its own types on a dead socket
            self.closed = True
            raise PeerGone() from exc
        if self.connection is not None and self.connection.gone:
            self.closed = True  # e.g. cut for not reading: the frame was dropped
            raise PeerGone()

    async def close(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
