"""Where calls live, and the limits every worker of a cluster shares.

:class:`CallRegistry` is the small interface the app (and the calls API's hang-up)
uses; it has two implementations:

- :class:`LocalCalls` (no ``VANTUM_REDIS_URL``): this process is the cluster. Admission
  is the in-process :class:`~vantum.server.registry.SessionRegistry` and limiter, a
  hang-up reaches only calls of this process, and so does an AMD verdict.
  ``vantum serve`` as it always was.
- :class:`~vantum.server.redis_calls.RedisCalls`: the state lives in Redis, so the
  session cap and per-address connect rate hold across every worker of every machine,
  and a hang-up reaches the worker holding the call (Redis pub/sub).

Both keep the per-process limits too: a worker never runs more than
``VANTUM_MAX_SESSIONS`` calls itself, whatever Redis says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ..transports.amd import AmdVerdicts

CAPACITY = "capacity"
"""``claim``'s refusal: the cluster-wide session cap is reached."""
UNAVAILABLE = "unavailable"
"""``claim``'s refusal: Redis is unreachable and ``VANTUM_REDIS_FAIL=closed``."""


class CallRegistry(Protocol):
    """The calls of the whole deployment, as one worker sees them."""

    async def allow_connect(self, ip: str, kind: str) -> bool:
        """Whether one more connection from ``ip`` fits the cluster's ``kind`` rate
        (``ws``, ``twilio``); always True where only the local limiter applies."""
        ...

    async def claim(self, call_id: str) -> str | None:
        """Count call ``call_id`` in (None) or say why not (:data:`CAPACITY`,
        :data:`UNAVAILABLE`). A claimed call must be :meth:`release`\\ d."""
        ...

    async def release(self, call_id: str) -> None:
        """The call ended (never raises: expiry cleans up what this cannot)."""
        ...

    async def hangup(self, call_id: str) -> bool:
        """End call ``call_id`` wherever it runs: True once the command is on its way
        to the worker holding it (delivered at once, or at that worker's next
        heartbeat); False if no worker holds it (or Redis is unreachable)."""
        ...

    async def report_amd(self, call_sid: str, answered_by: str) -> None:
        """Twilio's AMD verdict for ``call_sid`` (its callback may reach any worker),
        for the stream waiting for it wherever it runs. Never raises."""
        ...

    async def wait_amd(self, call_sid: str, timeout_s: float) -> str | None:
        """The AMD verdict for ``call_sid`` (taken, one waiter gets it), waiting up to
        ``timeout_s`` whichever worker it was reported on; None if none came."""
        ...


class LocalCalls:
    """One process is the whole cluster (the default)."""

    def __init__(self, deliver: Callable[[str], bool]) -> None:
        self._deliver = deliver
        self.amd = AmdVerdicts()

    async def allow_connect(self, ip: str, kind: str) -> bool:
        return True

    async def claim(self, call_id: str) -> str | None:
        return None

    async def release(self, call_id: str) -> None:
        return None

    async def hangup(self, call_id: str) -> bool:
        return self._deliver(call_id)

    async def report_amd(self, call_sid: str, answered_by: str) -> None:
        self.amd.report(call_sid, answered_by)

    async def wait_amd(self, call_sid: str, timeout_s: float) -> str | None:
        return await self.amd.wait(call_sid, timeout_s)
