"""Group commit in the SQLite call store: many calls' batches, one transaction each round.

What must hold: every row lands, in each call's order; concurrent writers share
thread round trips; a caller learns the fate of exactly the transaction its rows
were in; a bad batch fails alone; cancellation and close lose nothing silently.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Awaitable, Callable
from itertools import permutations
from pathlib import Path

import pytest
import trio
import trio.testing

from vantum.records import RecordError
from vantum.records.sqlite import SQLiteCallStore, _connect, open_sqlite_store
from vantum.records.store import NewEvent


def batch(call_id: str, first: int, n: int) -> list[NewEvent]:
    return [
        NewEvent(call_id, "transcript.final", {"i": first + k}, float(first + k)) for k in range(n)
    ]


async def write_noting_outcome(
    store: SQLiteCallStore, outcomes: dict[str, str], n: int, call_id: str
) -> None:
    """Write ``n`` events for ``call_id``; note "ok" or the RecordError's text."""
    try:
        await store.add_events(batch(call_id, 0, n))
        outcomes[call_id] = "ok"
    except RecordError as exc:
        outcomes[call_id] = str(exc)


async def order_of(store: SQLiteCallStore, call_id: str) -> list[int]:
    record = await store.get_call(call_id)
    assert record is not None
    seqs = [e.seq for e in record.events]
    assert seqs == sorted(seqs)
    return [int(e.payload["i"]) for e in record.events]


@pytest.mark.parametrize("gather_s", [0.0, 0.005])
async def test_concurrent_writers_share_transactions_and_keep_order(
    tmp_path: Path, gather_s: float
) -> None:
    sessions, batches, size = 30, 6, 10
    async with open_sqlite_store(tmp_path / "calls.db", gather_s=gather_s) as store:

        async def session(call_id: str) -> None:
            await store.start_call(call_id, at=0.0, transport="browser")
            for b in range(batches):
                await store.add_events(batch(call_id, b * size, size))
            await store.end_call(call_id, "completed", at=1.0)

        async with trio.open_nursery() as nursery:
            for i in range(sessions):
                nursery.start_soon(session, f"c{i}")

        calls = sessions * (batches + 2)
        assert store.writes.jobs == calls
        # Honest count: every trip to a worker thread, reads included, since open.
        assert store.writes.groups == store.thread_calls
        assert store.thread_calls * 4 <= calls, (store.thread_calls, calls)
        for i in range(sessions):
            assert await order_of(store, f"c{i}") == list(range(batches * size))
            record = await store.get_call(f"c{i}")
            assert record is not None and record.summary.outcome == "completed"


async def test_failed_transaction_reaches_every_caller_in_it(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    db = tmp_path / "calls.db"
    conn = _connect(str(db), "NORMAL")
    conn.execute("PRAGMA busy_timeout=0")  # fail at once instead of after 5 s
    store = SQLiteCallStore(conn, str(db), gather_s=1.0)
    try:
        for i in range(5):
            await store.start_call(f"c{i}", at=0.0, transport="browser")
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        outcomes: dict[str, str] = {}
        write = functools.partial(write_noting_outcome, store, outcomes, 3)

        groups = store.writes.groups
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(write, f"c{i}")
        assert store.writes.groups == groups + 1  # all five rode one transaction
        assert outcomes == {f"c{i}": "sqlite: database is locked" for i in range(5)}

        blocker.execute("ROLLBACK")
        blocker.close()
        async with trio.open_nursery() as nursery:  # the store recovers
            for i in range(5):
                nursery.start_soon(write, f"c{i}")
        assert outcomes == {f"c{i}": "ok" for i in range(5)}
        for i in range(5):
            assert await order_of(store, f"c{i}") == [0, 1, 2]
    finally:
        await store.aclose()


async def test_a_bad_batch_fails_alone(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_sqlite_store(tmp_path / "calls.db", gather_s=1.0) as store:
        await store.start_call("good", at=0.0, transport="browser")
        await store.start_call("good2", at=0.0, transport="browser")
        await store.start_call("dup", at=0.0, transport="browser")
        results: dict[str, str] = {}

        async def attempt(name: str, write: Callable[[], Awaitable[None]]) -> None:
            try:
                await write()
                results[name] = "ok"
            except RecordError as exc:
                results[name] = str(exc)

        groups = store.writes.groups
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attempt, "good-1", lambda: store.add_events(batch("good", 0, 2)))
            nursery.start_soon(attempt, "unknown", lambda: store.add_events(batch("nope", 0, 2)))
            nursery.start_soon(
                attempt, "dup", lambda: store.start_call("dup", at=1.0, transport="browser")
            )
            nursery.start_soon(attempt, "good-2", lambda: store.add_events(batch("good2", 0, 2)))
            nursery.start_soon(attempt, "end", lambda: store.end_call("ghost", "done", at=2.0))
        assert store.writes.groups == groups + 1
        assert results["good-1"] == results["good-2"] == "ok"
        assert "FOREIGN KEY" in results["unknown"]
        assert "UNIQUE" in results["dup"]
        assert results["end"] == "no call 'ghost' to end"
        assert await order_of(store, "good") == await order_of(store, "good2") == [0, 1]
        assert await store.get_call("nope") is None


async def test_cancelled_waiters_withdraw_and_the_lead_passes_on(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_sqlite_store(tmp_path / "calls.db", gather_s=1.0) as store:
        for name in ("leader", "withdrawn", "kept"):
            await store.start_call(name, at=0.0, transport="browser")
        scopes = {name: trio.CancelScope() for name in ("leader", "withdrawn", "kept")}
        finished: list[str] = []

        async def write(name: str) -> None:
            with scopes[name]:
                await store.add_events(batch(name, 0, 2))
                finished.append(name)

        async with trio.open_nursery() as nursery:
            for name in scopes:
                nursery.start_soon(write, name)
                await trio.testing.wait_all_tasks_blocked()
            assert store.writes.pending == 3  # the leader is still gathering
            scopes["leader"].cancel()  # before its group was taken: the next one leads
            scopes["withdrawn"].cancel()
        assert finished == ["kept"]
        assert await order_of(store, "kept") == [0, 1]
        assert await order_of(store, "leader") == []
        assert await order_of(store, "withdrawn") == []


async def test_cancel_after_the_group_is_taken_waits_for_the_commit(tmp_path: Path) -> None:
    """Like ``to_thread.run_sync``: rows already in a transaction are waited for."""
    db = tmp_path / "calls.db"
    async with open_sqlite_store(db, gather_s=0.0) as store:
        await store.start_call("c", at=0.0, transport="browser")
        await store.start_call("d", at=0.0, transport="browser")
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the group's BEGIN waits (busy_timeout) for it
        returned: list[str] = []
        scope = trio.CancelScope()

        async def follower() -> None:
            with scope:
                await store.add_events(batch("d", 0, 2))
                returned.append("d")

        async with trio.open_nursery() as nursery:
            async with store._lock:  # white box: so that "c" leads and "d" rides along
                nursery.start_soon(store.add_events, batch("c", 0, 2))
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(follower)
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            assert store.writes.pending == 0  # both taken: the leader is in its thread
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert returned == []  # still waiting for the verdict, not abandoned
            blocker.execute("ROLLBACK")
            blocker.close()
        assert returned == ["d"]  # returned its commit; the cancel comes at its next checkpoint
        assert await order_of(store, "d") == [0, 1]


async def test_a_cancelled_leader_still_writes_the_group_it_took(tmp_path: Path) -> None:
    """Others' rows ride on the leader's task: its cancellation must not fail them."""
    async with open_sqlite_store(tmp_path / "calls.db", gather_s=0.0) as store:
        await store.start_call("lead", at=0.0, transport="browser")
        await store.start_call("rider", at=0.0, transport="browser")
        scope = trio.CancelScope()
        outcomes: dict[str, str] = {}

        async def leader() -> None:
            with scope:
                await store.add_events(batch("lead", 0, 2))
                outcomes["lead"] = "ok"

        async def rider() -> None:
            await store.add_events(batch("rider", 0, 2))
            outcomes["rider"] = "ok"

        async with trio.open_nursery() as nursery:
            async with store._lock:  # white box: as if a read were in flight
                nursery.start_soon(leader)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(rider)
                await trio.testing.wait_all_tasks_blocked()
                assert store.writes.pending == 2
            # The lock went to the leader; cancel it before it reaches its thread.
            scope.cancel()
        assert outcomes == {"lead": "ok", "rider": "ok"}
        assert await order_of(store, "rider") == [0, 1]
        assert await order_of(store, "lead") == [0, 1]


async def test_pending_is_bounded_and_close_settles_every_caller(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    store = await SQLiteCallStore.open(tmp_path / "calls.db", max_pending=3, gather_s=1.0)
    for i in range(8):
        await store.start_call(f"c{i}", at=0.0, transport="browser")
    outcomes: dict[str, str] = {}
    write = functools.partial(write_noting_outcome, store, outcomes, 1)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(write, f"c{i}")
        await trio.testing.wait_all_tasks_blocked()
        assert store.writes.pending == 3  # the other five wait for room
        await store.aclose()  # accepted writes commit first; the rest are refused
    ok = sorted(k for k, v in outcomes.items() if v == "ok")
    refused = sorted(k for k, v in outcomes.items() if v == "call store is closed")
    assert len(ok) == 3 and len(refused) == 5
    with pytest.raises(RecordError, match="call store is closed"):
        await store.add_events(batch("c0", 1, 1))
    with pytest.raises(RecordError, match="call store is closed"):
        await store.get_call("c0")
    async with open_sqlite_store(tmp_path / "calls.db") as reopened:
        for i in range(8):
            expected = [0] if f"c{i}" in ok else []
            assert await order_of(reopened, f"c{i}") == expected


async def test_a_batch_over_the_row_cap_still_goes_whole(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "calls.db", max_group_rows=4) as store:
        await store.start_call("c", at=0.0, transport="browser")
        groups = store.writes.groups
        batches = [batch("c", 0, 10), batch("c", 10, 3), batch("c", 13, 3)]
        async with trio.open_nursery() as nursery:
            for b in batches:
                nursery.start_soon(store.add_events, b)
        assert store.writes.groups == groups + 3  # 10 > 4 alone; 3 + 3 > 4 apart
        written = await order_of(store, "c")
        runs = [[int(e.payload["i"]) for e in b] for b in batches]
        assert any(written == [i for r in order for i in r] for order in permutations(runs))
