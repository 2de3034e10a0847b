"""The answers a call has asked for and not yet finished, owned by the turn manager.

Pure bookkeeping (no I/O), so the turn manager's decisions about the floor — is the
bot speaking, is it busy, may a goodbye hang up now — come from one place. The
responder is handed one answer at a time: the next only after it reported the
previous one finished, so it never holds a queue of its own that could outlive a
decision (a barge-in, the end of the call) made here.
"""

from __future__ import annotations

from collections import deque

import attrs

from .messages import TurnRequest


class QueueFull(Exception):
    """More answers are waiting than the call allows; the new one is refused."""


@attrs.define
class AnswerQueue:
    limit: int = 10
    """Answers that may wait behind the one being spoken."""
    pending: deque[TurnRequest] = attrs.Factory(deque)
    in_flight: bool = False
    """The responder holds an answer (thinking, speaking or winding down)."""
    audible_since: float | None = None
    """When that answer's audio started playing (None: the bot is silent)."""
    interruptible: bool = True
    """Whether a barge-in may cut the answer in flight (its request's flag)."""
    hangup_reason: str | None = None
    """Hang up once every queued answer has been spoken (set by an idle goodbye)."""
    _hung_up: bool = False

    @property
    def speaking(self) -> bool:
        return self.audible_since is not None

    @property
    def busy(self) -> bool:
        return self.in_flight or bool(self.pending)

    def submit(self, request: TurnRequest) -> TurnRequest | None:
        """Queue ``request``; returns it when the responder should get it now.

        Raises :class:`QueueFull` when ``limit`` answers are already waiting.
        """
        if not self.in_flight:
            self.in_flight = True
            self.interruptible = request.interruptible
            return request
        if len(self.pending) >= self.limit:
            raise QueueFull()
        self.pending.append(request)
        return None

    def audible(self, at: float) -> None:
        if self.in_flight:
            self.audible_since = at

    def finished(self) -> TurnRequest | None:
        """The answer in flight is over; returns the next one to hand over, if any."""
        self.audible_since = None
        if self.pending:
            following = self.pending.popleft()
            self.interruptible = following.interruptible
            return following
        self.in_flight = False
        self.interruptible = True
        return None

    def drop_pending(self) -> list[TurnRequest]:
        dropped = list(self.pending)
        self.pending.clear()
        return dropped

    def hang_up_after_queue(self, reason: str) -> None:
        self.hangup_reason = reason

    def take_hangup(self) -> str | None:
        """The hang-up reason, once, when it is due (nothing left to say)."""
        if self.hangup_reason is None or self.busy or self._hung_up:
            return None
        self._hung_up = True
        return self.hangup_reason
