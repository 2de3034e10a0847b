"""PostgreSQL call records, for deployments with several servers or a data team.

Same interface and tables (``vantum_calls``, ``vantum_call_events``) as the SQLite
store; payloads are ``jsonb`` so they can be queried in place. psycopg is imported
only when a Postgres store is opened (``pip install 'psycopg[binary]'``).

psycopg's async API is asyncio-only, so the blocking API runs in
``trio.to_thread.run_sync``, one connection behind a :class:`trio.Lock`. A broken
connection is dropped and reopened on the next call, so a database restart costs
the batches written while it was down, not the server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
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
)

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS vantum_calls (
    call_id    TEXT PRIMARY KEY,
    transport  TEXT NOT NULL,
    started_at DOUBLE PRECISION NOT NULL,
    ended_at   DOUBLE PRECISION,
    outcome    TEXT,
    meta       JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS vantum_calls_started_at ON vantum_calls (started_at);
CREATE TABLE IF NOT EXISTS vantum_call_events (
    seq     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    call_id TEXT NOT NULL REFERENCES vantum_calls (call_id) ON DELETE CASCADE,
    kind    TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    payload JSONB NOT NULL
);
CREATE INDEX IF NOT EXISTS vantum_call_events_call ON vantum_call_events (call_id, seq);
"""

_CALL_COLUMNS = "call_id, transport, started_at, ended_at, outcome, meta"


class PostgresCallStore:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._conn: Any = None
        self._closed = False
        self._lock = trio.Lock()

    @classmethod
    async def open(cls, dsn: str) -> PostgresCallStore:
        """Connect and create the tables if they are missing."""
        store = cls(dsn)
        await store._run(_create_schema)
        return store

    async def start_call(
        self, call_id: str, *, at: float, transport: str, meta: Mapping[str, str] | None = None
    ) -> None:
        sql = (
            "INSERT INTO vantum_calls (call_id, transport, started_at, meta) "
            "VALUES (%s, %s, %s, %s::jsonb)"
        )
        await self._run(_write, sql, [(call_id, transport, at, _json(dict(meta or {})))])

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        sql = (
            "INSERT INTO vantum_call_events (call_id, kind, at, payload) "
            "VALUES (%s, %s, %s, %s::jsonb)"
        )
        await self._run(_write, sql, [(e.call_id, e.kind, e.at, _json(e.payload)) for e in events])

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None:
        await self.add_events([NewEvent(call_id, kind, payload, at)])

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None:
        sql = "UPDATE vantum_calls SET ended_at = %s, outcome = %s WHERE call_id = %s"
        if await self._run(_write, sql, [(at, outcome, call_id)]) == 0:
            raise RecordError(f"no call {call_id!r} to end")

    async def get_call(self, call_id: str) -> CallRecord | None:
        return await self._run(_get_call, call_id)

    async def list_calls(
        self, *, limit: int = 50, before: float | None = None
    ) -> list[CallSummary]:
        return await self._run(_list_calls, limit, before)

    async def close_orphans(self, outcome: str = OPEN_OUTCOME_ON_RESTART, *, at: float) -> int:
        sql = "UPDATE vantum_calls SET ended_at = %s, outcome = %s WHERE ended_at IS NULL"
        return await self._run(_write, sql, [(at, outcome)])

    async def aclose(self) -> None:
        async with self._lock:
            self._closed = True
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.close)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        import psycopg

        async with self._lock:
            if self._closed:
                raise RecordError("call store is closed")
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = await trio.to_thread.run_sync(
                        lambda: psycopg.connect(self.dsn, autocommit=True)
                    )
                return await trio.to_thread.run_sync(fn, self._conn, *args)
            except psycopg.OperationalError as exc:
                conn, self._conn = self._conn, None
                if conn is not None:
                    await trio.to_thread.run_sync(conn.close)
                raise RecordError(f"postgres: {exc}") from exc
            except psycopg.Error as exc:
                raise RecordError(f"postgres: {exc}") from exc


@asynccontextmanager
async def open_postgres_store(dsn: str) -> AsyncIterator[PostgresCallStore]:
    store = await PostgresCallStore.open(dsn)
    try:
        yield store
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


SCHEMA_LOCK = 0x76616E74756D
"""Advisory lock key ("vantum") held while the schema is created."""


def _create_schema(conn: Any) -> None:
    """Create the tables, one server at a time: workers starting side by side each run
    ``CREATE ... IF NOT EXISTS``, and PostgreSQL's catalog refuses the second of two
    concurrent creations of one table (``pg_type_typname_nsp_index``) instead of
    skipping it. The transaction-scoped advisory lock serialises them."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        conn.execute(SCHEMA)


def _json(payload: Mapping[str, Any]) -> str:
    text = dump_payload(payload)
    # jsonb refuses NUL characters; they carry no meaning in a transcript.
    return text.replace("\\u0000", "\\ufffd") if "\\u0000" in text else text


def _write(conn: Any, sql: str, rows: Sequence[tuple[Any, ...]]) -> int:
    changed = 0
    with conn.transaction(), conn.cursor() as cur:
        for row in rows:
            cur.execute(sql, row)
            changed += max(0, cur.rowcount)
    return changed


def _summary(row: tuple[Any, ...]) -> CallSummary:
    call_id, transport, started_at, ended_at, outcome, meta = row
    return CallSummary(call_id, transport, started_at, ended_at, outcome, dict(meta))


def _get_call(conn: Any, call_id: str) -> CallRecord | None:
    row = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM vantum_calls WHERE call_id = %s", (call_id,)
    ).fetchone()
    if row is None:
        return None
    events = conn.execute(
        "SELECT seq, kind, payload, at FROM vantum_call_events WHERE call_id = %s ORDER BY seq",
        (call_id,),
    ).fetchall()
    return CallRecord(_summary(row), tuple(CallEvent(s, k, dict(p), at) for s, k, p, at in events))


def _list_calls(conn: Any, limit: int, before: float | None) -> list[CallSummary]:
    where, args = ("WHERE started_at < %s", [before]) if before is not None else ("", [])
    rows = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM vantum_calls {where} "
        "ORDER BY started_at DESC, call_id DESC LIMIT %s",
        [*args, max(0, limit)],
    ).fetchall()
    return [_summary(r) for r in rows]
