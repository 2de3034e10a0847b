"""What both test clients (browser protocol, ``voicechat`` dialect) do with the socket.

A WebSocket, a background reader that decodes each frame into a bounded inbox (and
``events``, for assertions after the fact), and the connection's first frame: the
dialect's ACK carrying the session id, or an error event that refuses the call. The
dialects differ in names and in what they check, which the subclasses say.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, ClassVar, Self

import msgpack
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from ..protocol.ids import new_id


class ServerRefused(RuntimeError):
    """The server answered the connection with an error event, then closed it."""

    def __init__(self, event: dict[str, Any], close_code: int | None) -> None:
        message = event.get("payload", {}).get("message", "")
        super().__init__(f"{event.get('eventType')}: {message} (close code {close_code})")
        self.event = event
        self.close_code = close_code


class FrameClient:
    ACK: ClassVar[str]
    """The eventType of the connection's first frame when the call is admitted."""

    def __init__(self, ws: WebSocketConnection, inbox: trio.MemoryReceiveChannel[dict[str, Any]]):
        self.ws = ws
        self._inbox = inbox
        self.session_id = ""
        self.events: list[dict[str, Any]] = []
        """Every frame received, in order."""
        self.close_code: int | None = None

    @classmethod
    @asynccontextmanager
    async def _open(
        cls, url: str, headers: list[tuple[bytes, bytes]], max_message_size: int = 1 << 24
    ) -> AsyncIterator[Self]:
        """Connect and wait for the ACK; raises :class:`ServerRefused` when the server
        answers with an error event (bad token, capacity, shutdown) instead."""
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
                if ack["eventType"] != cls.ACK:
                    with trio.move_on_after(5):
                        async for _ in client._inbox:  # read on until the server closes
                            pass
                    refused = ServerRefused(ack, client.close_code)
                else:
                    client._admitted(ack)
                    yield client
                nursery.cancel_scope.cancel()
        if refused is not None:
            raise refused

    def _admitted(self, ack: dict[str, Any]) -> None:
        self.session_id = ack["sessionId"]

    def _decode(self, data: bytes | str) -> dict[str, Any]:
        assert isinstance(data, bytes), f"text frame from the server: {data!r}"
        event: dict[str, Any] = msgpack.unpackb(data, raw=False)
        return event

    async def _reader(self, tx: trio.MemorySendChannel[dict[str, Any]]) -> None:
        async with tx:
            while True:
                try:
                    data = await self.ws.get_message()
                except ConnectionClosed as exc:
                    self.close_code = exc.reason.code if exc.reason else None
                    return
                event = self._decode(data)
                self.events.append(event)
                await tx.send(event)

    async def next_event(self) -> dict[str, Any]:
        """The next frame; raises trio.EndOfChannel once the socket has closed."""
        return await self._inbox.receive()

    async def send(
        self,
        event_type: str,
        payload: dict[str, Any],
        *,
        session_id: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """Send one frame (``{eventType, eventId, sessionId, payload}``); returns its eventId."""
        event_id = event_id or new_id()
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


__all__ = ["FrameClient", "ServerRefused"]
