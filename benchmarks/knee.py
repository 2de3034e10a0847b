"""Where a server's bound breaks: the adaptive load sweep of ``replay.py --knee`` (sans-I/O).

A fixed list of load levels either stops before anything breaks (the capacity
figure is then "largest tested", not a measurement) or wastes minutes far past
the break. :class:`KneeSearch` raises the number of sessions geometrically until
a step misses the bound (p99 added latency over the budget, any underrun, an
unanswered turn), then bisects between the last step that held and the first that
did not, down to ``resolution`` sessions.

A step only measures the server when the load side kept up: the load generator
and the fakes share one core, and when they saturate it the latency they add is
theirs. Such a step ends the search: if it held, the knee is *at least* that many
sessions and the report says the load generator, not the server, was the limit;
if it broke, the break proves nothing about the server. Pure logic, no I/O: the
harness asks :meth:`KneeSearch.next_size`, runs the step, and reports it back.
"""

from __future__ import annotations

import enum
import math

import attrs


class Outcome(enum.Enum):
    SEARCHING = "searching"
    FOUND = "found"
    """The knee lies between ``good`` and ``bad``, at most ``resolution`` apart."""
    LOAD_LIMITED = "load_generator_limit"
    """The load side saturated first: the knee is above ``good`` (or unknown)."""
    CAPPED = "cap"
    """``good`` reached ``max_sessions`` and still held."""
    NONE_PASSED = "none_passed"
    """Even the smallest load tried missed the bound."""
    OUT_OF_STEPS = "out_of_steps"
    """The step budget ran out before the bracket was narrow enough."""


@attrs.define
class KneeSearch:
    start: int = 10
    growth: float = 1.5
    resolution: int = 2
    """Stop bisecting when the bracket is this narrow (sessions)."""
    max_sessions: int = 400
    max_steps: int = 10
    good: int | None = None
    """Largest load that held the bound."""
    bad: int | None = None
    """Smallest load that broke it."""
    steps: int = 0
    outcome: Outcome = Outcome.SEARCHING

    def __attrs_post_init__(self) -> None:
        if self.start < 1 or self.growth <= 1 or self.resolution < 1 or self.max_steps < 1:
            raise ValueError("start, resolution and max_steps must be >= 1, growth > 1")

    @property
    def done(self) -> bool:
        return self.outcome is not Outcome.SEARCHING

    def next_size(self) -> int | None:
        """The next load to measure, or None when the search is over."""
        if self.done:
            return None
        if self.steps >= self.max_steps:
            self.outcome = Outcome.OUT_OF_STEPS
            return None
        if self.bad is None:  # still raising
            if self.good is None:
                return min(self.start, self.max_sessions)
            if self.good >= self.max_sessions:
                self.outcome = Outcome.CAPPED
                return None
            raised = max(self.good + 1, math.ceil(self.good * self.growth))
            return min(raised, self.max_sessions)
        low = self.good or 0
        if self.bad - low <= self.resolution:
            self.outcome = Outcome.FOUND if self.good is not None else Outcome.NONE_PASSED
            return None
        return (low + self.bad) // 2

    def record(self, sessions: int, held: bool, load_limited: bool = False) -> None:
        """One measured step: whether it ``held`` the bound, and whether the load side
        (load generator, fakes) saturated during it."""
        self.steps += 1
        if load_limited:
            if held:
                self.good = max(self.good or 0, sessions)
            self.outcome = Outcome.LOAD_LIMITED
            return
        # Every size asked for lies above ``good`` and below ``bad``: no contradiction.
        if held:
            self.good = sessions
        else:
            self.bad = sessions
            if sessions <= 1 and self.good is None:
                self.outcome = Outcome.NONE_PASSED

    def report(self) -> dict[str, object]:
        return {
            "knee_sessions": self.good,
            "first_broken_sessions": self.bad,
            "outcome": self.outcome.value,
            "steps": self.steps,
        }
