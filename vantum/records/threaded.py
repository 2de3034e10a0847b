"""What the SQLite and PostgreSQL stores share: one blocking query per call, in a thread.

Both drivers block, so each store runs every statement through ``trio.to_thread`` on
one connection behind a lock (its ``_run``). Most of the store interface is then a
single blocking function applied to that connection; the functions differ per
database (placeholders, JSON operators, locking), the delegation does not. A store
names its functions once in a :class:`BlockingQueries` and inherits the methods.
Writes are not here: SQLite groups them into shared transactions, PostgreSQL writes
each through its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

import attrs

from .store import CallQuery, CallRecord, CallSummary, Delivery, NewEvent

T = TypeVar("T")


@attrs.frozen
class BlockingQueries:
    """A database's blocking functions; each takes the connection first."""

    get_call: Callable[[Any, str], CallRecord | None]
    list_calls: Callable[[Any, int, float | None], list[CallSummary]]
    find_call: Callable[[Any, str, str], str | None]
    query_calls: Callable[[Any, CallQuery], list[CallSummary]]
    claim: Callable[[Any, float, int, float], list[Delivery]]
    settle: Callable[[Any, int, str, float, float | None, str | None], None]
    outbox_stats: Callable[[Any], tuple[int, float | None]]
    prune: Callable[[Any, float], int]


class ThreadedQueries:
    """The store methods that are one :class:`BlockingQueries` function run by ``_run``."""

    QUERIES: ClassVar[BlockingQueries]

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        raise NotImplementedError

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        raise NotImplementedError

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None:
        await self.add_events([NewEvent(call_id, kind, payload, at)])

    async def get_call(self, call_id: str) -> CallRecord | None:
        return await self._run(self.QUERIES.get_call, call_id)

    async def list_calls(
        self, *, limit: int = 50, before: float | None = None
    ) -> list[CallSummary]:
        return await self._run(self.QUERIES.list_calls, limit, before)

    async def find_call(self, key: str, value: str) -> str | None:
        return await self._run(self.QUERIES.find_call, key, value)

    async def query_calls(self, query: CallQuery) -> list[CallSummary]:
        return await self._run(self.QUERIES.query_calls, query)

    async def claim_deliveries(self, *, now: float, limit: int, lease_s: float) -> list[Delivery]:
        return await self._run(self.QUERIES.claim, now, limit, lease_s)

    async def settle_delivery(
        self,
        delivery_id: int,
        *,
        state: str,
        at: float,
        retry_at: float | None = None,
        error: str | None = None,
    ) -> None:
        await self._run(self.QUERIES.settle, delivery_id, state, at, retry_at, error)

    async def outbox_stats(self) -> tuple[int, float | None]:
        return await self._run(self.QUERIES.outbox_stats)

    async def prune_outbox(self, *, settled_before: float) -> int:
        return await self._run(self.QUERIES.prune, settled_before)
