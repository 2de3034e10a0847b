"""Group commit: writers that arrive while a write is in flight share the next one.

Every call session's recorder writes its own small batches. Sent one by one, each
costs a worker-thread round trip and a transaction; under many concurrent calls
those round trips, not SQL, are most of the store's CPU. Here the first writer to
find the store idle *leads*: it takes every queued job (FIFO, up to ``max_group``
rows) and writes them in one ``write_group`` call. Writers arriving meanwhile park;
when the leader is done it wakes each writer whose job it carried, with that job's
own outcome, and hands the lead to the oldest writer still queued. A leader can
first wait ``gather_s`` for company: worth it where writes are off any caller's
critical path, as call records are.

No task outlives a call: leading is done by a caller's own task, so the store needs
no nursery and works outside ``async with``. Cancellation matches
``trio.to_thread.run_sync(abandon_on_cancel=False)``: a queued job is withdrawn,
but a job already in a transaction is waited for, since it may commit. At most
``max_pending`` jobs are queued or in flight; further writers wait for room.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, NoReturn, TypeVar

import outcome
import trio

from .store import RecordError

J = TypeVar("J")
R = TypeVar("R")

CLOSED = "call store is closed"


class _Slot(Generic[J, R]):
    __slots__ = ("job", "result", "size", "taken", "task")

    def __init__(self, job: J, size: int) -> None:
        self.job = job
        self.size = size
        self.task: trio.lowlevel.Task | None = None
        """Set while parked; the leader reschedules it (True: lead, False: done)."""
        self.taken = False
        """In a group being written: no longer withdrawable."""
        self.result: outcome.Outcome[R] | None = None


class GroupCommit(Generic[J, R]):
    """Batches concurrent :meth:`submit` calls into calls of ``write_group``.

    ``write_group(jobs)`` writes the jobs in order, in one transaction where it can,
    and returns one outcome per job; raising fails every job in the group. It runs
    with ``lock`` held (share the lock with readers of the same connection) and is
    never cancelled once it has started.
    """

    def __init__(
        self,
        write_group: Callable[[list[J]], Awaitable[list[outcome.Outcome[R]]]],
        *,
        lock: trio.Lock,
        max_pending: int = 512,
        max_group: int = 4096,
        gather_s: float = 0.0,
    ) -> None:
        if max_pending < 1 or max_group < 1:
            raise ValueError("max_pending and max_group must be at least 1")
        self._write_group = write_group
        self._lock = lock
        self._room = trio.Semaphore(max_pending)
        self._max_group = max_group
        self._gather_s = gather_s
        self._queue: deque[_Slot[J, R]] = deque()
        self._leading = False
        self._idle = trio.Event()
        self._idle.set()
        self._closed = False
        self.jobs = 0
        """Jobs submitted; ``jobs / groups`` is how many share a transaction on average."""
        self.groups = 0
        """``write_group`` calls made."""

    @property
    def pending(self) -> int:
        """Jobs queued and not yet taken into a group."""
        return len(self._queue)

    async def submit(self, job: J, size: int = 1) -> R:
        """Write ``job`` (``size`` rows); returns once it is committed, or raises."""
        async with self._room:
            if self._closed:
                raise RecordError(CLOSED)
            slot: _Slot[J, R] = _Slot(job, size)
            self._queue.append(slot)
            self.jobs += 1
            if self._leading:
                lead = await self._park(slot)
            else:
                self._leading = True
                self._idle = trio.Event()
                lead = True
            if lead:
                await self._lead(slot)
        assert slot.result is not None
        return slot.result.unwrap()

    async def close(self) -> None:
        """Refuse new jobs, and return once every accepted job has its outcome."""
        self._closed = True
        await self._idle.wait()

    async def _park(self, slot: _Slot[J, R]) -> bool:
        def abort(_: Callable[[], NoReturn]) -> trio.lowlevel.Abort:
            if slot.taken:
                return trio.lowlevel.Abort.FAILED  # may commit: wait for the verdict
            self._queue.remove(slot)
            return trio.lowlevel.Abort.SUCCEEDED

        slot.task = trio.lowlevel.current_task()
        try:
            lead: bool = await trio.lowlevel.wait_task_rescheduled(abort)
        finally:
            slot.task = None
        return lead

    async def _lead(self, own: _Slot[J, R]) -> None:
        try:
            if self._gather_s > 0 and not self._closed:
                await trio.sleep(self._gather_s)
            async with self._lock:  # writers queue up behind a reader meanwhile
                group = self._take()
                assert group[0] is own
                with trio.CancelScope(shield=True):  # others' rows ride on this task
                    await self._write(group)
        finally:
            if not own.taken:  # cancelled while gathering or waiting for the lock
                self._queue.remove(own)
            if self._queue:
                nxt = self._queue[0].task
                assert nxt is not None
                trio.lowlevel.reschedule(nxt, outcome.Value(True))
            else:
                self._leading = False
                self._idle.set()

    def _take(self) -> list[_Slot[J, R]]:
        group = [self._queue.popleft()]
        rows = group[0].size
        while self._queue and rows + self._queue[0].size <= self._max_group:
            rows += self._queue[0].size
            group.append(self._queue.popleft())
        for slot in group:
            slot.taken = True
        return group

    async def _write(self, group: list[_Slot[J, R]]) -> None:
        self.groups += 1
        results: list[outcome.Outcome[R]] | None = None
        try:
            try:
                results = await self._write_group([slot.job for slot in group])
                if len(results) != len(group):
                    raise AssertionError(f"{len(results)} outcomes for {len(group)} jobs")
            except Exception as exc:
                results = [_failed(exc) for _ in group]
        finally:  # every carried writer learns its outcome, even on KeyboardInterrupt
            for i, slot in enumerate(group):
                slot.result = results[i] if results is not None else _failed(None)
                if slot.task is not None:
                    trio.lowlevel.reschedule(slot.task, outcome.Value(False))


def _failed(cause: BaseException | None) -> outcome.Error:
    error = RecordError(f"write failed: {cause!r}" if cause else "write interrupted")
    error.__cause__ = cause
    return outcome.Error(error)
