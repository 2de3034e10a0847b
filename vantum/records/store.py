"""The storage interface for call records, and the values it returns.

A call is a row (id, carrier, start, end, outcome) plus an append-only list of
events (transcripts, answer text, turn metrics, errors). Times are Unix epoch
seconds — wall clock, not trio's clock — because records outlive the process.
Backends: :mod:`.sqlite` (embedded default) and :mod:`.postgres`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs

from ..errors import VantumError

OPEN_OUTCOME_ON_RESTART = "server_restart"
"""Outcome written by ``close_orphans`` for calls a previous process never ended."""


class RecordError(VantumError):
    """The call store refused or failed an operation (unknown call, duplicate id, I/O)."""


@attrs.frozen
class NewEvent:
    call_id: str
    kind: str
    payload: Mapping[str, Any]
    at: float


@attrs.frozen
class CallEvent:
    seq: int
    """Order within the call (increasing; gaps are possible)."""
    kind: str
    payload: dict[str, Any]
    at: float


@attrs.frozen
class CallSummary:
    call_id: str
    transport: str
    started_at: float
    ended_at: float | None
    outcome: str | None
    meta: dict[str, str]
    """Call facts: ``agent`` (the agent the call ran, docs/agents.md) and carrier ids."""

    @property
    def agent(self) -> str | None:
        """The agent the call ran; kept in ``meta`` (a JSON column in both stores, so
        no schema migration: PostgreSQL can index ``meta->>'agent'``)."""
        return self.meta.get("agent")


@attrs.frozen
class CallRecord:
    summary: CallSummary
    events: tuple[CallEvent, ...]

    @property
    def call_id(self) -> str:
        return self.summary.call_id

    def transcript(self) -> list[tuple[str, str]]:
        """(speaker, text) in order: caller finals and the assistant's answer text."""
        lines: list[tuple[str, str]] = []
        for e in self.events:
            if e.kind == "transcript.final" and e.payload.get("transcript"):
                lines.append(("caller", str(e.payload["transcript"])))
            elif e.kind == "conversation.response.text" and e.payload.get("text"):
                lines.append(("assistant", str(e.payload["text"])))
        return lines


DELIVERY_PENDING = "pending"
DELIVERY_DELIVERED = "delivered"
DELIVERY_FAILED = "failed"


@attrs.frozen
class Delivery:
    """One webhook delivery in the outbox: an event for one URL.

    The same event sent to two URLs is two deliveries with one ``event_id``."""

    delivery_id: int
    event_id: str
    event_type: str
    call_id: str
    url: str
    body: str
    """The exact JSON body; every attempt sends these bytes."""
    created_at: float
    attempts: int
    """Attempts made before this one."""


@attrs.frozen
class CallQuery:
    """A page of ``/v1/calls``: newest first, keyset-paginated on (started_at, call_id)."""

    limit: int = 50
    since: float | None = None
    """Calls started at or after (Unix seconds)."""
    until: float | None = None
    """Calls started before."""
    agent: str | None = None
    transport: str | None = None
    after: tuple[float, str] | None = None
    """The (started_at, call_id) of the last call of the previous page."""


class RecordWriter(Protocol):
    """What a call's recorder writes through (a part of :class:`CallStore`)."""

    async def start_call(
        self,
        call_id: str,
        *,
        at: float,
        transport: str,
        meta: Mapping[str, str] | None = None,
        webhooks: Sequence[str] = (),
    ) -> None:
        """Open the call's record; with ``webhooks``, queue ``call.started`` for each
        URL in the same transaction. The call's terminal event goes to the same URLs."""
        ...

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        """Append many events in one transaction (the recorder batches)."""
        ...

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None: ...

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None:
        """Close the record; queue ``call.ended``/``call.failed`` for the call's
        webhook URLs in the same transaction."""
        ...


class CallStore(RecordWriter, Protocol):
    """What the server needs from a record store. Every method may block on I/O."""

    async def update_meta(self, call_id: str, meta: Mapping[str, str]) -> bool:
        """Merge ``meta`` into the call's; False if there is no such call."""
        ...

    async def find_call(self, key: str, value: str) -> str | None:
        """The id of the most recent call whose meta has ``key`` = ``value``."""
        ...

    async def query_calls(self, query: CallQuery) -> list[CallSummary]: ...

    # --- the webhook outbox ---------------------------------------------------------

    async def claim_deliveries(self, *, now: float, limit: int, lease_s: float) -> list[Delivery]:
        """Up to ``limit`` pending deliveries due by ``now``, oldest first, each leased
        for ``lease_s`` (not handed out again meanwhile, by this or another server;
        if this process dies, the lease lapses and they are delivered again)."""
        ...

    async def settle_delivery(
        self,
        delivery_id: int,
        *,
        state: str,
        at: float,
        retry_at: float | None = None,
        error: str | None = None,
    ) -> None:
        """Record an attempt's outcome: delivered, failed, or pending again at ``retry_at``."""
        ...

    async def outbox_stats(self) -> tuple[int, float | None]:
        """(pending deliveries, when the next one is due)."""
        ...

    async def prune_outbox(self, *, settled_before: float) -> int:
        """Delete deliveries delivered or failed before then; returns how many."""
        ...

    async def get_call(self, call_id: str) -> CallRecord | None: ...

    async def list_calls(
        self, *, limit: int = 50, before: float | None = None
    ) -> list[CallSummary]:
        """Most recent first; ``before`` pages by ``started_at``."""
        ...

    async def close_orphans(self, outcome: str = OPEN_OUTCOME_ON_RESTART, *, at: float) -> int:
        """End calls left open by a process that died; returns how many.

        Only safe when this process is the store's sole writer (the SQLite case).
        """
        ...

    async def aclose(self) -> None: ...


def dump_payload(payload: Mapping[str, Any]) -> str:
    """JSON for a payload; binary values are summarised, never stored."""
    return json.dumps(payload, separators=(",", ":"), default=_jsonable, ensure_ascii=False)


def load_payload(text: str) -> dict[str, Any]:
    value = json.loads(text)
    return value if isinstance(value, dict) else {"value": value}


def _jsonable(value: object) -> object:
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(value)} bytes>"
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    return repr(value)
