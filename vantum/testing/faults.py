"""Fault-injection state the fakes share, so a storm means the same in each of them."""

from __future__ import annotations

import math

import attrs
import trio


@attrs.define
class RefusalWindow:
    """``refuse_for``: every request inside a window of time gets one HTTP status.

    Real providers refuse in bursts (a 429 storm), not one request at a time, so the
    window is a span of time rather than a count; tests wait for it to pass.
    """

    until: float = -math.inf
    status: int = 429
    retry_after: float | None = None
    """What a ``Retry-After`` header says, for fakes of services that send one."""

    def open(self, seconds: float, status: int, retry_after: float | None = None) -> None:
        self.until = trio.current_time() + seconds
        self.status = status
        self.retry_after = retry_after

    def status_now(self) -> int | None:
        """The status to refuse a request with now, or None outside the window."""
        return self.status if trio.current_time() < self.until else None

    async def wait_over(self) -> None:
        if self.until > trio.current_time():
            await trio.sleep_until(self.until)
