"""Which delivery failures are retried, and when: pure policy, no I/O.

Timeouts, connection failures and 5xx (and 408/429, which say "later") are
transient: retried with exponential backoff and full jitter (so a receiver that
comes back is not hit by every server's retries in the same second), until
``max_age_s`` after the event was created; then, or at once for any other 4xx
(the receiver refused this request and will refuse it again), the delivery is
marked failed and kept in the outbox for inspection.
"""

from __future__ import annotations

import random

import attrs

RETRYABLE_4XX = frozenset({408, 425, 429})


@attrs.frozen
class RetryPolicy:
    base_s: float = 2.0
    """The first retry waits up to this long."""
    factor: float = 2.0
    cap_s: float = 600.0
    """No wait between attempts is longer than this."""
    max_age_s: float = 24 * 3600.0
    """An event still undelivered this long after it was created is marked failed."""
    timeout_s: float = 10.0
    """One attempt (connect, send, response) may take this long."""

    def delay(self, attempts: int, rand: random.Random | None = None) -> float:
        """Seconds to wait after ``attempts`` failed attempts (full jitter in
        [ceiling/2, ceiling], so a retry is never immediate)."""
        ceiling = min(self.cap_s, self.base_s * self.factor ** max(0, attempts - 1))
        r = (rand or random).random()
        return ceiling / 2 + r * ceiling / 2

    def next_attempt(
        self, *, attempts: int, created_at: float, now: float, rand: random.Random | None = None
    ) -> float | None:
        """When to try again after ``attempts`` failures, or None: give up."""
        at = now + self.delay(attempts, rand)
        return at if at <= created_at + self.max_age_s else None


def retryable_status(status: int) -> bool:
    """Whether an HTTP status means "try again later" rather than "no"."""
    return status >= 500 or status in RETRYABLE_4XX
