"""SQLite call records: the embedded default, one file, no server to run.

Runs in WAL mode with ``synchronous=NORMAL``: a committed batch survives the
process dying (a restart loses nothing said); only an OS crash or power loss can
drop the last few commits. Pass ``synchronous="FULL"`` to close that gap too.

sqlite3 blocks, so every call runs in ``trio.to_thread.run_sync``; one connection
is shared and a :class:`trio.Lock` lets one statement batch run at a time, which
is also what SQLite's single writer would impose anyway.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio

from .store import (
    OPEN_OUTCOME_ON_RESTART,
    CallEvent,
    CallRecord,
    CallSummary,
    NewEvent,
    RecordError,
    dump_payload,
    load_payload,
)

T = TypeVar("T")

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
"""


class SQLiteCallStore:
    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = conn
        self._lock = trio.Lock()

    @classmethod
    async def open(cls, path: str | Path, *, synchronous: str = "NORMAL") -> SQLiteCallStore:
        """Open (creating file and schema if needed) the database at ``path``."""
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous={synchronous!r}")
        conn = await trio.to_thread.run_sync(_connect, str(path), synchronous.upper())
        return cls(conn, str(path))

    async def start_call(
        self, call_id: str, *, at: float, transport: str, meta: Mapping[str, str] | None = None
    ) -> None:
        meta_json = dump_payload(dict(meta or {}))
        await self._run(
            _write,
            "INSERT INTO vantum_calls (call_id, transport, started_at, meta) VALUES (?, ?, ?, ?)",
            [(call_id, transport, at, meta_json)],
        )

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        rows = [(e.call_id, e.kind, e.at, dump_payload(e.payload)) for e in events]
        await self._run(
            _write,
            "INSERT INTO vantum_call_events (call_id, kind, at, payload) VALUES (?, ?, ?, ?)",
            rows,
        )

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None:
        await self.add_events([NewEvent(call_id, kind, payload, at)])

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None:
        changed = await self._run(
            _write,
            "UPDATE vantum_calls SET ended_at = ?, outcome = ? WHERE call_id = ?",
            [(at, outcome, call_id)],
        )
        if changed == 0:
            raise RecordError(f"no call {call_id!r} to end")

    async def get_call(self, call_id: str) -> CallRecord | None:
        return await self._run(_get_call, call_id)

    async def list_calls(
        self, *, limit: int = 50, before: float | None = None
    ) -> list[CallSummary]:
        return await self._run(_list_calls, limit, before)

    async def close_orphans(self, outcome: str = OPEN_OUTCOME_ON_RESTART, *, at: float) -> int:
        return await self._run(
            _write,
            "UPDATE vantum_calls SET ended_at = ?, outcome = ? WHERE ended_at IS NULL",
            [(at, outcome)],
        )

    async def aclose(self) -> None:
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._lock:
            if self._conn is None:
                raise RecordError("call store is closed")
            try:
                return await trio.to_thread.run_sync(fn, self._conn, *args)
            except sqlite3.Error as exc:
                raise RecordError(f"sqlite: {exc}") from exc


@asynccontextmanager
async def open_sqlite_store(
    path: str | Path, *, synchronous: str = "NORMAL"
) -> AsyncIterator[SQLiteCallStore]:
    store = await SQLiteCallStore.open(path, synchronous=synchronous)
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
        conn.executescript(f"BEGIN; {SCHEMA} PRAGMA user_version={SCHEMA_VERSION}; COMMIT;")
    except BaseException:
        conn.close()
        raise
    return conn


def _write(conn: sqlite3.Connection, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    """One transaction; returns the number of rows changed."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.executemany(sql, rows)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return cursor.rowcount


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
