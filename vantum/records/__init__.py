"""Call records: what was said on each call, its timings and outcome, kept across restarts.

``open_store(url)`` picks the backend: ``sqlite:///calls.db`` (relative), ``sqlite:////var/lib/vantum/calls.db``
(absolute) or a bare path
for the embedded default, ``postgresql://...`` for PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from .recorder import CallRecorder, record_call
from .store import (
    CallEvent,
    CallQuery,
    CallRecord,
    CallStore,
    CallSummary,
    Delivery,
    NewEvent,
    RecordError,
    RecordWriter,
)


@asynccontextmanager
async def open_store(url: str) -> AsyncIterator[CallStore]:
    """Open the store ``url`` names for the duration of the block."""
    if url.startswith(("postgresql://", "postgres://")):
        from .postgres import open_postgres_store

        async with open_postgres_store(url) as pg:
            yield pg
        return
    # As SQLAlchemy: sqlite:///rel/calls.db is relative, sqlite:////abs/calls.db absolute.
    path = url.removeprefix("sqlite://").removeprefix("/") if url.startswith("sqlite:") else url
    if not path:
        raise RecordError(f"no database path in {url!r}")
    from .sqlite import open_sqlite_store

    async with open_sqlite_store(path) as lite:
        yield lite


__all__ = [
    "CallEvent",
    "CallQuery",
    "CallRecord",
    "CallRecorder",
    "CallStore",
    "CallSummary",
    "Delivery",
    "NewEvent",
    "RecordError",
    "RecordWriter",
    "open_store",
    "record_call",
]
