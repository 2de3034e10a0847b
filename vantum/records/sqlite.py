"""SQLite call records: the embedded default, one file, no server to run.

Runs in WAL mode with ``synchronous=NORMAL``: a committed batch survives the
process dying (a restart loses nothing said); only an OS crash or power loss can
drop the last few commits. Pass ``synchronous="FULL"`` to close that gap too.

sqlite3 blocks, so every call runs in ``trio.to_thread.run_sync``; one connection
is shared and a :class:`trio.Lock` lets one statement batch run at a time, which
is also what SQLite's single writer would impose anyway. Writes go through a
:class:`~.group_commit.GroupCommit`: the batches of all calls that arrive while
one transaction is in flight are written together in the next, in one thread
round trip, and each caller still learns its own batch's outcome.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import outcome
import trio

from .group_commit import CLOSED, GroupCommit
from .outbox import OUTBOX_COLUMNS, started_rows, terminal_rows
from .store import (
    DELIVERY_PENDING,
    OPEN_OUTCOME_ON_RESTART,
    CallEvent,
    CallQuery,
    CallRecord,
    CallSummary,
    Delivery,
    NewEvent,
    RecordError,
    dump_payload,
    load_payload,
)
from .threaded import BlockingQueries, ThreadedQueries

T = TypeVar("T")
GATHER_S = 0.005
"""How long a write waits for others to share its transaction. Recording is off the
call's path (the recorder queues), so a few ms cost nothing audible, and with 30
calls writing they cut the store's own CPU by half: far fewer thread round trips."""
Write = tuple[str, Sequence[tuple[Any, ...]]] | Callable[[sqlite3.Connection], int]
"""One job, applied atomically: a statement and its parameter rows, or a function of
the connection (run inside the group's transaction) returning the rows it changed."""

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS vantum_calls (
    call_id    TEXT PRIMARY KEY,
    transport  TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at   REAL,
    outcome    TEXT,
    meta       TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS vantum_calls_started_at ON vantum_calls (started_at);
CREATE TABLE IF NOT EXISTS vantum_call_events (
    seq     INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES vantum_calls (call_id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    at      REAL NOT NULL,
    payload TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS vantum_call_events_call ON vantum_call_events (call_id, seq);
CREATE TABLE IF NOT EXISTS vantum_webhook_outbox (
    delivery_id     INTEGER PRIMARY KEY,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    settled_at      REAL
);
CREATE INDEX IF NOT EXISTS vantum_webhook_outbox_due
    ON vantum_webhook_outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS vantum_webhook_outbox_call ON vantum_webhook_outbox (call_id);
"""


class SQLiteCallStore(ThreadedQueries):
    def __init__(
        self,
        conn: sqlite3.Connection,
        path: str,
        *,
        max_pending: int = 512,
        max_group_rows: int = 4096,
        gather_s: float = GATHER_S,
    ) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = trio.Lock()
        self._writes: GroupCommit[Write, int] = GroupCommit(
            self._write_group,
            lock=self._lock,
            max_pending=max_pending,
            max_group=max_group_rows,
            gather_s=gather_s,
        )
        self.thread_calls = 0
        """Worker-thread round trips made since open (reads and write groups)."""

    @property
    def writes(self) -> GroupCommit[Write, int]:
        """The write queue; its ``jobs`` and ``groups`` counters show how well writes group."""
        return self._writes

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        max_pending: int = 512,
        max_group_rows: int = 4096,
        gather_s: float = GATHER_S,
    ) -> SQLiteCallStore:
        """Open (creating file and schema if needed) the database at ``path``.

        At most ``max_pending`` write calls wait at once (more wait for room), and
        one transaction carries at most ``max_group_rows`` rows unless a single
        call brings more. A write waits ``gather_s`` for others to join it.
        """
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}")
        conn = await trio.to_thread.run_sync(_connect, str(path), synchronous.upper())
        return cls(
            conn,
            str(path),
            max_pending=max_pending,
            max_group_rows=max_group_rows,
            gather_s=gather_s,
        )

    async def start_call(
        self,
        call_id: str,
        *,
        at: float,
        transport: str,
        meta: Mapping[str, str] | None = None,
        webhooks: Sequence[str] = (),
    ) -> None:
        summary = CallSummary(call_id, transport, at, None, None, dict(meta or {}))
        if not webhooks:
            await self._write(_INSERT_CALL, [_call_row(summary)])
            return

        def job(conn: sqlite3.Connection) -> int:
            changed = conn.execute(_INSERT_CALL, _call_row(summary)).rowcount
            _insert_outbox(conn, started_rows(summary, webhooks, at))
            return changed

        await self._write_job(job)

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        rows = [(e.call_id, e.kind, e.at, dump_payload(e.payload)) for e in events]
        await self._write(
            "INSERT INTO vantum_call_events (call_id, kind, at, payload) VALUES (?, ?, ?, ?)",
            rows,
        )

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None:
        def job(conn: sqlite3.Connection) -> int:
            changed = conn.execute(
                "UPDATE vantum_calls SET ended_at = ?, outcome = ? WHERE call_id = ?",
                (at, outcome, call_id),
            ).rowcount
            if changed:
                _queue_terminal(conn, call_id, at)
            return changed

        if await self._write_job(job) == 0:
            raise RecordError(f"no call {call_id!r} to end")

    async def update_meta(self, call_id: str, meta: Mapping[str, str]) -> bool:
        changed = await self._write(
            "UPDATE vantum_calls SET meta = json_patch(meta, ?) WHERE call_id = ?",
            [(dump_payload(dict(meta)), call_id)],
        )
        return changed > 0

    async def close_orphans(self, outcome: str = OPEN_OUTCOME_ON_RESTART, *, at: float) -> int:
        def job(conn: sqlite3.Connection) -> int:
            rows = conn.execute("SELECT call_id FROM vantum_calls WHERE ended_at IS NULL")
            orphans = [call_id for (call_id,) in rows.fetchall()]
            for call_id in orphans:
                conn.execute(
                    "UPDATE vantum_calls SET ended_at = ?, outcome = ? WHERE call_id = ?",
                    (at, outcome, call_id),
                )
                _queue_terminal(conn, call_id, at)
            return len(orphans)

        return await self._write_job(job)

    async def aclose(self) -> None:
        """Refuse new calls, let writes already accepted commit, then close."""
        await self._writes.close()
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    async def _write(self, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
        if self._conn is None:
            raise RecordError(CLOSED)
        return await self._writes.submit((sql, rows), len(rows))

    async def _write_job(self, job: Callable[[sqlite3.Connection], int]) -> int:
        if self._conn is None:
            raise RecordError(CLOSED)
        return await self._writes.submit(job, 1)

    async def _write_group(self, jobs: list[Write]) -> list[outcome.Outcome[int]]:
        if self._conn is None:
            return [outcome.Error(RecordError(CLOSED)) for _ in jobs]
        self.thread_calls += 1
        return await trio.to_thread.run_sync(_write_group, self._conn, jobs)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            if self._conn is None:
                raise RecordError(CLOSED)
            self.thread_calls += 1
            try:
                return await trio.to_thread.run_sync(fn, self._conn, *args)
            except sqlite3.Error as exc:
                raise RecordError(f"sqlite: {exc}") from exc


@asynccontextmanager
async def open_sqlite_store(
    path: str | Path,
    *,
    synchronous: str = "NORMAL",
    max_pending: int = 512,
    max_group_rows: int = 4096,
    gather_s: float = GATHER_S,
) -> AsyncIterator[SQLiteCallStore]:
    store = await SQLiteCallStore.open(
        path,
        synchronous=synchronous,
        max_pending=max_pending,
        max_group_rows=max_group_rows,
        gather_s=gather_s,
    )
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


# --- blocking helpers (run in a worker thread) -----------------------------------------


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute("PRAGMA busy_timeout=5000")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise RecordError(f"{path}: schema version {version} is newer than this Vantum's")
        # IMMEDIATE: take the write lock first, waiting up to busy_timeout. Two workers
        # opening one database side by side in a deferred transaction both read, then
        # both upgrade to write, and SQLite fails one at once ("database is locked")
        # rather than wait into a deadlock.
        conn.executescript(
            f"BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;"
        )
    except BaseException:
        conn.close()
        raise
    return conn


def _write_group(conn: sqlite3.Connection, jobs: list[Write]) -> list[outcome.Outcome[int]]:
    """All jobs in one transaction; each job's outcome is its count of rows changed.

    A job that fails on its own (a duplicate call id, an unknown call) is left out
    and the rest retried, so one bad call does not fail the others; a failed
    BEGIN or COMMIT fails every job it carried.
    """
    results: list[outcome.Outcome[int] | None] = [None] * len(jobs)
    todo = list(range(len(jobs)))
    while todo:
        current: int | None = None
        counts: list[int] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for current in todo:
                job = jobs[current]
                if callable(job):
                    counts.append(job(conn))
                else:
                    sql, rows = job
                    counts.append(conn.executemany(sql, rows).rowcount)
            current = None
            conn.execute("COMMIT")
        except Exception as exc:  # a job's own failure (SQL or building its rows)
            _rollback(conn)
            failed = todo if current is None else [current]
            for i in failed:
                results[i] = outcome.Error(RecordError(f"sqlite: {exc}"))
            todo = [i for i in todo if i not in failed]
            continue
        except BaseException:
            _rollback(conn)
            raise
        for i, count in zip(todo, counts, strict=True):
            results[i] = outcome.Value(count)
        break
    return _all(results)


def _rollback(conn: sqlite3.Connection) -> None:
    if conn.in_transaction:  # some failures (I/O, full disk) have rolled back already
        conn.execute("ROLLBACK")


def _all(results: list[outcome.Outcome[int] | None]) -> list[outcome.Outcome[int]]:
    done = [r for r in results if r is not None]
    assert len(done) == len(results)
    return done


def _summary(row: tuple[Any, ...]) -> CallSummary:
    call_id, transport, started_at, ended_at, outcome, meta = row
    return CallSummary(call_id, transport, started_at, ended_at, outcome, load_payload(meta))


_CALL_COLUMNS = "call_id, transport, started_at, ended_at, outcome, meta"


def _get_call(conn: sqlite3.Connection, call_id: str) -> CallRecord | None:
    row = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM vantum_calls WHERE call_id = ?", (call_id,)
    ).fetchone()
    if row is None:
        return None
    events = conn.execute(
        "SELECT seq, kind, payload, at FROM vantum_call_events WHERE call_id = ? ORDER BY seq",
        (call_id,),
    ).fetchall()
    return CallRecord(
        _summary(row), tuple(CallEvent(s, k, load_payload(p), at) for s, k, p, at in events)
    )


def _list_calls(conn: sqlite3.Connection, limit: int, before: float | None) -> list[CallSummary]:
    where, args = ("WHERE started_at < ?", [before]) if before is not None else ("", [])
    rows = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM vantum_calls {where} "
        "ORDER BY started_at DESC, call_id DESC LIMIT ?",
        [*args, max(0, limit)],
    ).fetchall()
    return [_summary(r) for r in rows]


_INSERT_CALL = "INSERT INTO vantum_calls (call_id, transport, started_at, meta) VALUES (?, ?, ?, ?)"


def _call_row(summary: CallSummary) -> tuple[str, str, float, str]:
    return (summary.call_id, summary.transport, summary.started_at, dump_payload(summary.meta))


def _insert_outbox(conn: sqlite3.Connection, rows: Sequence[Any]) -> None:
    if rows:
        conn.executemany(
            f"INSERT INTO vantum_webhook_outbox ({OUTBOX_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [r.values() for r in rows],
        )


def _queue_terminal(conn: sqlite3.Connection, call_id: str, now: float) -> None:
    """Queue the ended call's terminal event for the URLs its start was sent to."""
    urls = [
        u
        for (u,) in conn.execute(
            "SELECT DISTINCT url FROM vantum_webhook_outbox "
            "WHERE call_id = ? AND event_type = 'call.started' ORDER BY url",
            (call_id,),
        )
    ]
    if not urls:
        return
    record = _get_call(conn, call_id)
    if record is not None:
        _insert_outbox(conn, terminal_rows(record, urls, now))


def _find_call(conn: sqlite3.Connection, key: str, value: str) -> str | None:
    row = conn.execute(
        "SELECT call_id FROM vantum_calls WHERE json_extract(meta, ?) = ? "
        "ORDER BY started_at DESC LIMIT 1",
        (f'$."{key}"', value),
    ).fetchone()
    return None if row is None else str(row[0])


def _query_calls(conn: sqlite3.Connection, q: CallQuery) -> list[CallSummary]:
    where: list[str] = []
    args: list[Any] = []
    if q.since is not None:
        where.append("started_at >= ?")
        args.append(q.since)
    if q.until is not None:
        where.append("started_at < ?")
        args.append(q.until)
    if q.transport is not None:
        where.append("transport = ?")
        args.append(q.transport)
    if q.agent is not None:
        where.append("json_extract(meta, '$.agent') = ?")
        args.append(q.agent)
    if q.after is not None:
        where.append("(started_at < ? OR (started_at = ? AND call_id < ?))")
        args.extend([q.after[0], q.after[0], q.after[1]])
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM vantum_calls {clause} "
        "ORDER BY started_at DESC, call_id DESC LIMIT ?",
        [*args, max(0, q.limit)],
    ).fetchall()
    return [_summary(r) for r in rows]


_DELIVERY_COLUMNS = "delivery_id, event_id, event_type, call_id, url, body, created_at, attempts"


def _claim(conn: sqlite3.Connection, now: float, limit: int, lease_s: float) -> list[Delivery]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        rows = conn.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM vantum_webhook_outbox "
            "WHERE state = ? AND next_attempt_at <= ? ORDER BY next_attempt_at, delivery_id "
            "LIMIT ?",
            (DELIVERY_PENDING, now, limit),
        ).fetchall()
        conn.executemany(
            "UPDATE vantum_webhook_outbox SET next_attempt_at = ? WHERE delivery_id = ?",
            [(now + lease_s, r[0]) for r in rows],
        )
        conn.execute("COMMIT")
    except BaseException:
        _rollback(conn)
        raise
    return [Delivery(*r) for r in rows]


def _settle(
    conn: sqlite3.Connection,
    delivery_id: int,
    state: str,
    at: float,
    retry_at: float | None,
    error: str | None,
) -> None:
    conn.execute(
        "UPDATE vantum_webhook_outbox SET state = ?, attempts = attempts + 1, last_error = ?, "
        "next_attempt_at = COALESCE(?, next_attempt_at), "
        "settled_at = CASE WHEN ? = 'pending' THEN NULL ELSE ? END WHERE delivery_id = ?",
        (state, error, retry_at, state, at, delivery_id),
    )


def _outbox_stats(conn: sqlite3.Connection) -> tuple[int, float | None]:
    count, due = conn.execute(
        "SELECT COUNT(*), MIN(next_attempt_at) FROM vantum_webhook_outbox WHERE state = ?",
        (DELIVERY_PENDING,),
    ).fetchone()
    return int(count), due


def _prune(conn: Any, before: float) -> int:
    cur = conn.execute(
        "DELETE FROM vantum_webhook_outbox WHERE state <> ? AND settled_at < ?",
        (DELIVERY_PENDING, before),
    )
    return max(0, int(cur.rowcount))


SQLiteCallStore.QUERIES = BlockingQueries(
    get_call=_get_call,
    list_calls=_list_calls,
    find_call=_find_call,
    query_calls=_query_calls,
    claim=_claim,
    settle=_settle,
    outbox_stats=_outbox_stats,
    prune=_prune,
)
