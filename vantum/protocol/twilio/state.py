"""One stream's order rules and its played position, learned from mark echoes.

Marks are how we learn what the caller actually heard: Twilio echoes a mark once
the audio queued before it has played, and echoes every pending mark at once
after a ``clear`` (that audio was dropped, not played). :class:`TwilioStreamState`
turns those echoes into a played position, which barge-in uses to cut the
assistant's transcript at what was really said.
"""

from __future__ import annotations

import enum

from .inbound import (
    InboundEvent,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
)
from .wire import TwilioProtocolError


class Phase(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    STARTED = "started"
    STOPPED = "stopped"


class TwilioStreamState:
    """Checks inbound order and streamSid, and turns mark echoes into played audio.

    ``mark_sent(name, audio_ms)`` records a mark placed after ``audio_ms`` of audio
    queued since the previous mark (or since start / the last clear). When Twilio
    echoes it, that audio has played. After :meth:`clear` the pending marks come
    back too, but their audio was dropped, so they add nothing: ``played_ms``
    never decreases and never counts cleared audio. (A mark whose echo was already
    in flight when we cleared is counted as cleared: the estimate errs low.)
    """

    def __init__(self) -> None:
        self.phase = Phase.NEW
        self.start: TwilioStart | None = None
        self.last_sequence_number = 0
        self._pending: dict[str, int] = {}  # insertion-ordered: name -> audio_ms
        self._cleared: set[str] = set()
        self._played_ms = 0

    @property
    def stream_sid(self) -> str:
        if self.start is None:
            raise TwilioProtocolError("no Twilio stream has started yet")
        return self.start.stream_sid

    @property
    def played_ms(self) -> int:
        return self._played_ms

    @property
    def pending_ms(self) -> int:
        """Audio sent before a mark that Twilio has not confirmed as played yet."""
        return sum(self._pending.values())

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(self._pending)

    @property
    def cleared_marks(self) -> frozenset[str]:
        return frozenset(self._cleared)

    def receive(self, event: InboundEvent) -> InboundEvent:
        """Validate ``event`` against the stream so far; account for marks."""
        if isinstance(event, TwilioConnected):
            if self.phase is not Phase.NEW:
                raise TwilioProtocolError("connected received twice or after start", "connected")
            self.phase = Phase.CONNECTED
            return event
        name = _event_name(event)
        if self.phase is Phase.STOPPED:
            raise TwilioProtocolError(f"{name} received after stop", name)
        if isinstance(event, TwilioStart):
            if self.phase is Phase.STARTED:
                raise TwilioProtocolError("start received twice", name)
            self.start = event
            self.phase = Phase.STARTED
        elif self.phase is not Phase.STARTED:
            raise TwilioProtocolError(f"{name} received before start", name)
        elif event.stream_sid != self.stream_sid:
            raise TwilioProtocolError(
                f"{name} for streamSid {event.stream_sid!r}, expected {self.stream_sid!r}", name
            )
        if event.sequence_number <= self.last_sequence_number:
            raise TwilioProtocolError(
                f"{name} sequenceNumber {event.sequence_number} does not follow "
                f"{self.last_sequence_number}",
                name,
            )
        self.last_sequence_number = event.sequence_number
        if isinstance(event, TwilioMark):
            self.mark_received(event.name)
        elif isinstance(event, TwilioStop):
            self.phase = Phase.STOPPED
        return event

    def mark_sent(self, name: str, audio_ms: int) -> None:
        if audio_ms < 0:
            raise ValueError(f"audio_ms must not be negative, got {audio_ms}")
        if name in self._pending or name in self._cleared:
            raise ValueError(f"mark {name!r} is already outstanding")
        self._pending[name] = audio_ms

    def mark_received(self, name: str) -> int:
        """Account for an echoed mark; return the played position in ms."""
        if name in self._cleared:
            self._cleared.discard(name)
            return self._played_ms
        if not self._pending:
            raise TwilioProtocolError(f"mark {name!r} was never sent", "mark")
        oldest = next(iter(self._pending))
        if name != oldest:
            known = (
                "was never sent" if name not in self._pending else f"came back before {oldest!r}"
            )
            raise TwilioProtocolError(f"mark {name!r} {known}", "mark")
        self._played_ms += self._pending.pop(name)
        return self._played_ms

    def clear(self) -> None:
        """Record that we sent ``clear``: queued audio is dropped, pending marks return."""
        self._cleared.update(self._pending)
        self._pending.clear()


def _event_name(event: InboundEvent) -> str:
    return {
        TwilioStart: "start",
        TwilioMedia: "media",
        TwilioMark: "mark",
        TwilioDtmf: "dtmf",
        TwilioStop: "stop",
    }.get(type(event), "connected")
