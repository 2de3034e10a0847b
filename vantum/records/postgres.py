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

from .outbox import OUTBOX_COLUMNS, OutboxRow, started_rows, terminal_rows
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
)
from .threaded import BlockingQueries, ThreadedQueries

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
CREATE TABLE IF NOT EXISTS vantum_webhook_outbox (
    delivery_id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id        TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    call_id         TEXT NOT NULL,
    url             TEXT NOT NULL,
    body            TEXT NOT NULL,
    created_at      DOUBLE PRECISION NOT NULL,
    next_attempt_at DOUBLE PRECISION NOT NULL,
    state           TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    last_error      TEXT,
    settled_at      DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS vantum_webhook_outbox_due
    ON vantum_webhook_outbox (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS vantum_webhook_outbox_call ON vantum_webhook_outbox (call_id);
"""

_CALL_COLUMNS = "call_id, transport, started_at, ended_at, outcome, meta"


class PostgresCallStore(ThreadedQueries):
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
        self,
        call_id: str,
        *,
        at: float,
        transport: str,
        meta: Mapping[str, str] | None = None,
        webhooks: Sequence[str] = (),
    ) -> None:
        summary = CallSummary(call_id, transport, at, None, None, dict(meta or {}))
        await self._run(_start_call, summary, started_rows(summary, webhooks, at))

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        if not events:
            return
        sql = (
            "INSERT INTO vantum_call_events (call_id, kind, at, payload) "
            "VALUES (%s, %s, %s, %s::jsonb)"
        )
        await self._run(_write, sql, [(e.call_id, e.kind, e.at, _json(e.payload)) for e in events])

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None:
        if await self._run(_end_calls, [call_id], outcome, at) == 0:
            raise RecordError(f"no call {call_id!r} to end")

    async def update_meta(self, call_id: str, meta: Mapping[str, str]) -> bool:
        sql = "UPDATE vantum_calls SET meta = meta || %s::jsonb WHERE call_id = %s"
        return await self._run(_write, sql, [(_json(dict(meta)), call_id)]) > 0

    async def close_orphans(self, outcome: str = OPEN_OUTCOME_ON_RESTART, *, at: float) -> int:
        return await self._run(_end_calls, None, outcome, at)

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


def _insert_outbox(cur: Any, rows: Sequence[OutboxRow]) -> None:
    values = ", ".join(["%s"] * 7)
    sql = f"INSERT INTO vantum_webhook_outbox ({OUTBOX_COLUMNS}) VALUES ({values})"
    for row in rows:
        cur.execute(sql, row.values())


def _start_call(conn: Any, summary: CallSummary, outbox: Sequence[OutboxRow]) -> None:
    with conn.transaction(), conn.cursor() as cur:
        cur.execute(
            "INSERT INTO vantum_calls (call_id, transport, started_at, meta) "
            "VALUES (%s, %s, %s, %s::jsonb)",
            (summary.call_id, summary.transport, summary.started_at, _json(summary.meta)),
        )
        _insert_outbox(cur, outbox)


def _end_calls(conn: Any, call_ids: Sequence[str] | None, outcome: str, at: float) -> int:
    """End ``call_ids`` (None: every open call) and queue their terminal events for
    the URLs their ``call.started`` went to, all in one transaction."""
    with conn.transaction(), conn.cursor() as cur:
        if call_ids is None:
            cur.execute(
                "UPDATE vantum_calls SET ended_at = %s, outcome = %s WHERE ended_at IS NULL "
                "RETURNING call_id",
                (at, outcome),
            )
        else:
            cur.execute(
                "UPDATE vantum_calls SET ended_at = %s, outcome = %s WHERE call_id = ANY(%s) "
                "RETURNING call_id",
                (at, outcome, list(call_ids)),
            )
        ended = [str(r[0]) for r in cur.fetchall()]
        for call_id in ended:
            cur.execute(
                "SELECT DISTINCT url FROM vantum_webhook_outbox "
                "WHERE call_id = %s AND event_type = 'call.started' ORDER BY url",
                (call_id,),
            )
            urls = [str(u) for (u,) in cur.fetchall()]
            if urls:
                record = _get_call(conn, call_id)
                if record is not None:
                    _insert_outbox(cur, terminal_rows(record, urls, at))
        return len(ended)


def _find_call(conn: Any, key: str, value: str) -> str | None:
    row = conn.execute(
        "SELECT call_id FROM vantum_calls WHERE meta ->> %s = %s ORDER BY started_at DESC LIMIT 1",
        (key, value),
    ).fetchone()
    return None if row is None else str(row[0])


def _query_calls(conn: Any, q: CallQuery) -> list[CallSummary]:
    where: list[str] = []
    args: list[Any] = []
    if q.since is not None:
        where.append("started_at >= %s")
        args.append(q.since)
    if q.until is not None:
        where.append("started_at < %s")
        args.append(q.until)
    if q.transport is not None:
        where.append("transport = %s")
        args.append(q.transport)
    if q.agent is not None:
        where.append("meta ->> 'agent' = %s")
        args.append(q.agent)
    if q.after is not None:
        where.append("(started_at, call_id) < (%s, %s)")
        args.extend(q.after)
    clause = f"WHERE {' AND '.join(where)}" if where else ""
    rows = conn.execute(
        f"SELECT {_CALL_COLUMNS} FROM vantum_calls {clause} "
        "ORDER BY started_at DESC, call_id DESC LIMIT %s",
        [*args, max(0, q.limit)],
    ).fetchall()
    return [_summary(r) for r in rows]


def _claim(conn: Any, now: float, limit: int, lease_s: float) -> list[Delivery]:
    """SKIP LOCKED: servers sharing the database each take different deliveries."""
    with conn.transaction():
        rows = conn.execute(
            "WITH due AS (SELECT delivery_id FROM vantum_webhook_outbox "
            "WHERE state = %s AND next_attempt_at <= %s "
            "ORDER BY next_attempt_at, delivery_id LIMIT %s FOR UPDATE SKIP LOCKED) "
            "UPDATE vantum_webhook_outbox o SET next_attempt_at = %s FROM due "
            "WHERE o.delivery_id = due.delivery_id RETURNING o.delivery_id, o.event_id, "
            "o.event_type, o.call_id, o.url, o.body, o.created_at, o.attempts",
            (DELIVERY_PENDING, now, limit, now + lease_s),
        ).fetchall()
    return sorted((Delivery(*r) for r in rows), key=lambda d: d.delivery_id)


def _settle(
    conn: Any, delivery_id: int, state: str, at: float, retry_at: float | None, error: str | None
) -> None:
    conn.execute(
        "UPDATE vantum_webhook_outbox SET state = %s, attempts = attempts + 1, last_error = %s, "
        "next_attempt_at = COALESCE(%s::double precision, next_attempt_at), "
        "settled_at = CASE WHEN %s::text = 'pending' THEN NULL ELSE %s::double precision END "
        "WHERE delivery_id = %s",
        (state, error, retry_at, state, at, delivery_id),
    )


def _outbox_stats(conn: Any) -> tuple[int, float | None]:
    count, due = conn.execute(
        "SELECT COUNT(*), MIN(next_attempt_at) FROM vantum_webhook_outbox WHERE state = %s",
        (DELIVERY_PENDING,),
    ).fetchone()
    return int(count), due


def _prune(conn: Any, before: float) -> int:
    cur = conn.execute(
        "DELETE FROM vantum_webhook_outbox WHERE state <> %s AND settled_at < %s",
        (DELIVERY_PENDING, before),
    )
    return max(0, int(cur.rowcount))


PostgresCallStore.QUERIES = BlockingQueries(
    get_call=_get_call,
    list_calls=_list_calls,
    find_call=_find_call,
    query_calls=_query_calls,
    claim=_claim,
    settle=_settle,
    outbox_stats=_outbox_stats,
    prune=_prune,
)
