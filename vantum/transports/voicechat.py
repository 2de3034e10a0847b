"""The ``voicechat`` dialect (``/voicechat/ws``): the browser transport with the
original TypeScript Vantum's names (:mod:`.voicechat_wire`) and its leniencies.

Everything here happens at the edge; the session cannot tell the dialects apart:

- ``samplingRate`` may be omitted from ``voicechat.audio.start`` (16000 Hz);
- audio chunks before any ``voicechat.audio.start`` are accepted at 16000 Hz: the
  transport hands the session a start of its own first (and drops its ACK, which
  the client never asked for);
- a frame's ``sessionId`` is not checked (the original ignores it; its frontend
  keeps a stale id after reconnecting while recording); its ACK or error echoes it.
"""

from __future__ import annotations

import time

import attrs

from ..errors import ProtocolError
from ..pipeline.events import InputAcknowledged, ServerEvent
from ..protocol import client_events
from ..protocol import events as ev
from ..protocol.client_events import ClientEvent, InputChunk, InputEnd, InputStart
from ..protocol.envelope import Envelope
from ..protocol.ids import new_id
from .asgi_ws import ASGIReceive, ASGISend
from .browser import BrowserTransport
from .browser_wire import WireEvent
from .voicechat_wire import to_wire

DEFAULT_RATE = 16_000
"""The rate of audio the client did not describe (the original's default)."""

_STARTS = frozenset({ev.INPUT_START, "voicechat.audio.start"})

__all__ = ["DEFAULT_RATE", "VoicechatTransport"]


class VoicechatTransport(BrowserTransport):
    def __init__(
        self, session_id: str, receive: ASGIReceive, send: ASGISend, max_frame_bytes: int = 1 << 20
    ) -> None:
        super().__init__(session_id, receive, send, max_frame_bytes)
        self._started = False
        self._pending: list[ClientEvent] = []
        self._unasked_acks: set[str] = set()
        self._foreign_ids: dict[str, str] = {}
        """eventId -> the other sessionId a start or end carried (its ACK echoes it)."""

    async def receive(self) -> ClientEvent | ProtocolError:
        if self._pending:
            return self._pending.pop(0)
        return await super().receive()

    def parse(self, frame: Envelope) -> ClientEvent:
        lenient = attrs.evolve(frame, session_id=self.session_id)
        if frame.event_type in _STARTS and frame.payload.get("samplingRate") is None:
            lenient = attrs.evolve(lenient, payload={**frame.payload, "samplingRate": DEFAULT_RATE})
        try:
            event = client_events.parse(lenient, self.session_id)
        except ProtocolError as exc:
            raise exc.of_request(frame.event_id, frame.session_id) from None
        if isinstance(event, InputStart | InputEnd) and frame.session_id != self.session_id:
            self._foreign_ids[frame.event_id] = frame.session_id
        if isinstance(event, InputStart):
            self._started = True
        elif isinstance(event, InputChunk) and not self._started:
            self._started = True
            start = InputStart(new_id(), DEFAULT_RATE)
            self._unasked_acks.add(start.event_id)
            self._pending.append(event)
            return start
        return event

    def wire(self, event: ServerEvent) -> WireEvent | None:
        if isinstance(event, InputAcknowledged) and event.event_id in self._unasked_acks:
            self._unasked_acks.discard(event.event_id)
            return None
        wire = to_wire(event, time.time() * 1000.0)
        if isinstance(event, InputAcknowledged) and event.event_id in self._foreign_ids:
            return attrs.evolve(wire, session_id=self._foreign_ids.pop(event.event_id))
        return wire
