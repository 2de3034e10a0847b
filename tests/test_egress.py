"""Egress after the caller has gone: late events are dropped, never an error for their senders."""

from __future__ import annotations

import trio

from vantum.errors import ProtocolError
from vantum.pipeline.events import ResponseText, ServerEvent
from vantum.pipeline.session import run_egress
from vantum.pipeline.transport import PeerGone
from vantum.protocol.client_events import ClientEvent


class GoneAfter:
    """A connection that delivers ``n`` events, then finds the peer gone."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.sent: list[str] = []
        self.session_id = "s"

    async def receive(self) -> ClientEvent | ProtocolError:
        raise PeerGone()  # egress never reads; the rest of ``Transport`` for the type checker

    async def send(self, event: ServerEvent) -> None:
        if len(self.sent) >= self.n:
            raise PeerGone()
        assert isinstance(event, ResponseText)
        self.sent.append(event.text)

    async def close(self, code: int, reason: str) -> None:
        pass


async def test_events_sent_after_the_peer_left_are_swallowed() -> None:
    """The soak's one crash in 11 188 calls: the responder finished its answer after
    egress had seen the peer leave and before the session cancelled it."""
    transport = GoneAfter(2)
    seen: list[str] = []

    class Observer:
        def on_event(self, event: ServerEvent) -> None:
            assert isinstance(event, ResponseText)
            seen.append(event.text)

    tx, rx = trio.open_memory_channel[ServerEvent](0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_egress, rx, transport, Observer())
        async with tx:
            for i in range(6):  # would raise BrokenResourceError from the 4th on before
                await tx.send(ResponseText("u", f"e{i}"))
    assert transport.sent == ["e0", "e1"]
    assert seen == ["e0", "e1", "e2"]  # the one whose send found the peer gone is observed
