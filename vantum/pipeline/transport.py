"""What a session needs from the connection it serves, whatever the carrier.

The browser WebSocket and a Twilio media stream both become a ``Transport``:
inbound frames arrive already parsed into client events (or a ProtocolError to
report), outbound events are encoded by the transport. The pipeline is identical.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import ProtocolError
from ..protocol.client_events import ClientEvent
from .events import ServerEvent


class PeerGone(Exception):
    """The peer closed the connection (or it broke); the session should end."""


class Transport(Protocol):
    session_id: str

    async def receive(self) -> ClientEvent | ProtocolError:
        """Next inbound event; raises PeerGone when the connection is over."""
        ...

    async def send(self, event: ServerEvent) -> None:
        """Encode and send one event; raises PeerGone if the peer is gone."""
        ...

    async def close(self, code: int, reason: str) -> None: ...
