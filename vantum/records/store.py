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


class CallStore(Protocol):
    """What the server needs from a record store. Every method may block on I/O."""

    async def start_call(
        self, call_id: str, *, at: float, transport: str, meta: Mapping[str, str] | None = None
    ) -> None: ...

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        """Append many events in one transaction (the recorder batches)."""
        ...

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None: ...

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None: ...

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
