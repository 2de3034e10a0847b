"""The browser transport: MessagePack envelopes over an ASGI WebSocket."""

from __future__ import annotations

from ..errors import ProtocolError
from ..pipeline.events import ServerEvent
from ..protocol import client_events, envelope
from ..protocol import events as ev
from ..protocol.client_events import ClientEvent
from ..protocol.ids import new_id
from .asgi_ws import ASGIReceive, ASGISend, AsgiWebSocket
from .browser_wire import WireEvent, to_wire

__all__ = ["ASGIReceive", "ASGISend", "BrowserTransport"]


class BrowserTransport:
    """Adapts an ASGI WebSocket to the session's Transport interface."""

    def __init__(
        self, session_id: str, receive: ASGIReceive, send: ASGISend, max_frame_bytes: int = 1 << 20
    ) -> None:
        self.session_id = session_id
        self.ws = AsgiWebSocket(receive, send, max_frame_bytes)

    @property
    def close_code(self) -> int | None:
        return self.ws.close_code

    async def receive(self) -> ClientEvent | ProtocolError:
        data = await self.ws.receive_frame()
        if data is None:
            return ProtocolError(ev.ERR_MALFORMED, "unexpected ASGI message")
        if isinstance(data, str):
            return ProtocolError(
                ev.ERR_MALFORMED, "text frames are not accepted; send binary MessagePack frames"
            )
        try:
            return self.parse(envelope.decode(data))
        except ProtocolError as exc:
            return exc

    def parse(self, frame: envelope.Envelope) -> ClientEvent:
        """The client event of one decoded frame (a dialect may be more lenient)."""
        return client_events.parse(frame, self.session_id)

    def wire(self, event: ServerEvent) -> WireEvent | None:
        """The dialect's form of ``event``; None sends nothing."""
        return to_wire(event)

    async def send(self, event: ServerEvent) -> None:
        wire = self.wire(event)
        if wire is None:
            return
        frame = envelope.encode_fields(
            wire.event_type,
            wire.event_id or new_id(),
            wire.session_id or self.session_id,
            wire.payload,
            wire.request_type,
        )
        await self.ws.send_frame(frame)

    async def close(self, code: int, reason: str) -> None:
        await self.ws.close(code, reason)
