"""The webhook outbox's rows: which deliveries a record change queues. Pure.

Both backends call these inside the transaction that starts or ends a call and
insert what they return into ``vantum_webhook_outbox``, so the record and the
events it causes commit together or not at all. A call's webhook URLs are those
its ``call.started`` rows were queued for: the terminal event goes to the same
URLs even after a restart (delivered rows are kept, so this holds until they are
pruned, long after any call has ended).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

from ..protocol.ids import new_id
from . import payloads
from .store import CallRecord, CallSummary

OUTBOX_COLUMNS = "event_id, event_type, call_id, url, body, created_at, next_attempt_at"


@attrs.frozen
class OutboxRow:
    event_id: str
    event_type: str
    call_id: str
    url: str
    body: str
    created_at: float

    def values(self) -> tuple[str, str, str, str, str, float, float]:
        """In ``OUTBOX_COLUMNS`` order; due at once."""
        e = self
        return (e.event_id, e.event_type, e.call_id, e.url, e.body, e.created_at, e.created_at)


def started_rows(summary: CallSummary, urls: Sequence[str], now: float) -> list[OutboxRow]:
    return _rows(summary.call_id, payloads.CALL_STARTED, payloads.started_data(summary), urls, now)


def terminal_rows(record: CallRecord, urls: Sequence[str], now: float) -> list[OutboxRow]:
    kind = payloads.terminal_type(record.summary.outcome)
    return _rows(record.call_id, kind, payloads.ended_data(record), urls, now)


def _rows(
    call_id: str, kind: str, data: dict[str, object], urls: Sequence[str], now: float
) -> list[OutboxRow]:
    if not urls:
        return []
    event_id = new_id()
    body = payloads.envelope(event_id, kind, now, data)
    return [OutboxRow(event_id, kind, call_id, url, body, now) for url in dict.fromkeys(urls)]
