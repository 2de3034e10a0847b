"""The browser transport: MessagePack envelopes over an ASGI WebSocket."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import ProtocolError
from ..pipeline.messages import ServerEvent
from ..pipeline.transport import PeerGone
from ..protocol import client_events, envelope
from ..protocol import events as ev
from ..protocol.client_events import ClientEvent

ASGIReceive = Callable[[], Awaitable[dict[str, Any]]]
ASGISend = Callable[[dict[str, Any]], Awaitable[None]]


class BrowserTransport:
    """Adapts ASGI ``receive``/``send`` to the session's Transport interface."""

    def __init__(
        self, session_id: str, receive: ASGIReceive, send: ASGISend, max_frame_bytes: int = 1 << 20
    ) -> None:
        self.session_id = session_id
        self.max_frame_bytes = max_frame_bytes
        self._receive = receive
        self._send = send
        self._closed = False
        self.close_code: int | None = None

    async def receive(self) -> ClientEvent | ProtocolError:
        if self._closed:
            raise PeerGone()
        message = await self._receive()
        kind = message["type"]
        if kind == "websocket.disconnect":
            self._closed = True
            self.close_code = message.get("code")
            raise PeerGone()
        if kind != "websocket.receive":
            return ProtocolError(ev.ERR_MALFORMED, f"unexpected ASGI message {kind}")
        data = message.get("bytes")
        size = len(data) if data is not None else len(message.get("text") or "")
        if size > self.max_frame_bytes:
            # Enforced here rather than by Hypercorn's own limit: after closing for
            # an oversize message Hypercorn 0.18 never reports the disconnect to the
            # app, which would leave the session running forever.
            await self.close(
                ev.CLOSE_TOO_BIG, f"frame of {size} bytes exceeds {self.max_frame_bytes}"
            )
            raise PeerGone()
        if data is None:
            return ProtocolError(
                ev.ERR_MALFORMED, "text frames are not accepted; send binary MessagePack frames"
            )
        try:
            return client_events.parse(envelope.decode(data), self.session_id)
        except ProtocolError as exc:
            return exc

    async def send(self, event: ServerEvent) -> None:
        if self._closed:
            raise PeerGone()
        frame = envelope.encode(
            envelope.server_event(
                self.session_id,
                event.event_type,
                event.payload,
                event_id=event.event_id,
                request_type=event.request_type,
            )
        )
        try:
            await self._send({"type": "websocket.send", "bytes": frame})
        except Exception as exc:  # the ASGI server raises its own types on a dead socket
            self._closed = True
            raise PeerGone() from exc

    async def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(Exception):
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
