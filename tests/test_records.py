"""Call records: round trips, survival across a restart, and a recorder that never blocks."""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

from vantum.pipeline import events as e
from vantum.pipeline.events import ServerEvent
from vantum.protocol import events as ev
from vantum.records import CallRecorder, RecordError, open_store, record_call
from vantum.records.recorder import DROPPED_KIND
from vantum.records.sqlite import SQLiteCallStore, open_sqlite_store
from vantum.records.store import CallRecord, CallSummary, NewEvent

CONVERSATION: list[ServerEvent] = [
    e.SessionReady(),
    e.TranscriptInterim("hel", 0.5, 1, "en-US"),
    e.TranscriptFinal("hello there", 0.9, 2, "en-US"),
    e.ResponseStarted("u1", 3),
    e.ResponseText("u1", "Hi!"),
    e.OutputChunk("u1", b"\x00" * 640, 16_000),
    e.ResponseText("u1", "How can I help? 🙂"),
    e.ResponseComplete("u1"),
    e.TurnMetrics("u1", voice_to_voice_ms=412.5),
    e.ErrorEvent(ev.ERR_TTS, "boom", "turn"),
]


def final(text: str) -> ServerEvent:
    return e.TranscriptFinal(text, 0.9, 0, "en-US")


class Clock:
    def __init__(self) -> None:
        self.t = 1_700_000_000.0

    def __call__(self) -> float:
        self.t += 0.5
        return self.t


async def test_sqlite_round_trip(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "calls.db") as store:
        await store.start_call("c1", at=10.0, transport="browser", meta={"ip": "10.0.0.1"})
        await store.add_event("c1", "transcript.final", {"transcript": "hi", "raw": b"\x01"}, 11.0)
        await store.add_events(
            [NewEvent("c1", "conversation.response.text", {"text": "Hello"}, 12.0)]
        )
        await store.end_call("c1", "completed", at=13.0)
        record = await store.get_call("c1")
        assert record is not None
        assert record.summary == CallSummary(
            "c1", "browser", 10.0, 13.0, "completed", {"ip": "10.0.0.1"}
        )
        assert [e.kind for e in record.events] == ["transcript.final", "conversation.response.text"]
        assert record.events[0].payload == {"transcript": "hi", "raw": "<1 bytes>"}
        assert record.events[0].seq < record.events[1].seq
        assert record.transcript() == [("caller", "hi"), ("assistant", "Hello")]
        assert await store.get_call("nope") is None


async def test_sqlite_errors_are_record_errors(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "calls.db") as store:
        await store.start_call("c1", at=1.0, transport="browser")
        with pytest.raises(RecordError):
            await store.start_call("c1", at=2.0, transport="browser")
        with pytest.raises(RecordError):
            await store.add_event("unknown", "x", {}, 1.0)
        with pytest.raises(RecordError):
            await store.end_call("unknown", "completed", at=1.0)
    with pytest.raises(RecordError):
        await store.get_call("c1")  # closed


async def test_list_calls_newest_first_with_paging(tmp_path: Path) -> None:
    async with open_store(f"sqlite:///{tmp_path}/calls.db") as store:
        for i in range(5):
            await store.start_call(f"c{i}", at=100.0 + i, transport="twilio")
        assert [c.call_id for c in await store.list_calls(limit=2)] == ["c4", "c3"]
        assert [c.call_id for c in await store.list_calls(before=102.0)] == ["c1", "c0"]


async def test_records_survive_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "data" / "calls.db"
    async with open_sqlite_store(db) as store:
        await store.start_call("done", at=1.0, transport="browser")
        await store.add_event("done", "transcript.final", {"transcript": "first"}, 2.0)
        await store.end_call("done", "completed", at=3.0)
        await store.start_call("open", at=4.0, transport="twilio")
        await store.add_event("open", "transcript.final", {"transcript": "cut off"}, 5.0)
    # A new store on the same file (a new server process) sees everything.
    async with open_sqlite_store(db) as store:
        done = await store.get_call("done")
        assert done is not None and done.transcript() == [("caller", "first")]
        assert await store.close_orphans(at=9.0) == 1
        reopened = await store.get_call("open")
        assert reopened is not None
        assert (reopened.summary.outcome, reopened.summary.ended_at) == ("server_restart", 9.0)
        assert reopened.transcript() == [("caller", "cut off")]
        assert await store.close_orphans(at=10.0) == 0
    # And the file is an ordinary WAL-mode SQLite database anyone can query.
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        assert conn.execute("SELECT COUNT(*) FROM vantum_call_events").fetchone() == (2,)


async def test_committed_events_survive_the_process_dying(tmp_path: Path) -> None:
    """No close, no checkpoint: a child process writes and is killed (SIGKILL)."""
    db = tmp_path / "calls.db"
    script = (
        "import os, trio\n"
        "from vantum.records.sqlite import SQLiteCallStore\n"
        "async def main():\n"
        f"    store = await SQLiteCallStore.open({str(db)!r})\n"
        "    await store.start_call('c', at=1.0, transport='browser')\n"
        "    await store.add_event('c', 'transcript.final', {'transcript': 'keep me'}, 2.0)\n"
        "    os.kill(os.getpid(), 9)\n"
        "trio.run(main)\n"
    )
    proc = await trio.run_process([sys.executable, "-c", script], check=False, env=dict(os.environ))
    assert proc.returncode == -9
    async with open_sqlite_store(db) as store:
        record = await store.get_call("c")
        assert record is not None and record.transcript() == [("caller", "keep me")]


async def test_recorder_keeps_what_was_said(tmp_path: Path) -> None:
    seen: list[ServerEvent] = []

    class Metrics:
        def on_event(self, event: ServerEvent) -> None:
            seen.append(event)

    async with open_sqlite_store(tmp_path / "calls.db") as store:
        async with record_call(
            store, "call-1", transport="browser", also=Metrics(), wall_clock=Clock()
        ) as rec:
            for event in CONVERSATION:
                rec.on_event(event)
        record = await store.get_call("call-1")
    assert seen == CONVERSATION  # chained observer sees everything
    assert record is not None and record.summary.outcome == "completed"
    assert record.transcript() == [
        ("caller", "hello there"),
        ("assistant", "Hi!"),
        ("assistant", "How can I help? 🙂"),
    ]
    kinds = [e.kind for e in record.events]
    assert ev.TRANSCRIPT_INTERIM not in kinds and ev.OUTPUT_CHUNK not in kinds
    assert kinds[-2:] == [ev.METRICS_TURN, ev.ERR_TTS]
    assert record.events[-1].payload == {"message": "boom", "requestType": "turn"}
    metrics = record.events[-2].payload
    assert metrics["utteranceId"] == "u1" and metrics["voiceToVoiceMs"] == 412.5
    assert rec.dropped == 0 and rec.written == 7


class SlowStore:
    """Blocks every write until released, like a store on a stalled disk."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.batches: list[list[NewEvent]] = []
        self.ended: list[tuple[str, str]] = []
        self.extra: list[tuple[str, Mapping[str, Any]]] = []

    async def start_call(self, call_id: str, **_: Any) -> None:
        pass

    async def add_events(self, events: Sequence[NewEvent]) -> None:
        await self.release.wait()
        self.batches.append(list(events))

    async def add_event(
        self, call_id: str, kind: str, payload: Mapping[str, Any], at: float
    ) -> None:
        self.extra.append((kind, payload))

    async def end_call(self, call_id: str, outcome: str, *, at: float) -> None:
        self.ended.append((call_id, outcome))

    async def get_call(self, call_id: str) -> CallRecord | None:
        return None

    async def list_calls(self, **_: Any) -> list[CallSummary]:
        return []

    async def close_orphans(self, outcome: str = "", *, at: float) -> int:
        return 0

    async def aclose(self) -> None:
        pass


async def test_full_queue_drops_and_counts_never_blocks() -> None:
    store = SlowStore()
    async with record_call(store, "c", transport="browser", queue_size=8) as rec:
        await trio.testing.wait_all_tasks_blocked()
        said = final("x")
        for _ in range(100):
            rec.on_event(said)  # synchronous: returns at once even with the store stuck
        # The writer holds the first event in its stuck batch; 8 more fit the queue.
        assert rec.dropped == 100 - 1 - 8
        store.release.set()
    assert sum(len(b) for b in store.batches) == 9 and rec.written == 9
    assert store.extra == [(DROPPED_KIND, {"count": 91})]
    assert store.ended == [("c", "completed")]


async def test_flush_is_bounded_and_outcome_follows_cancellation(autojump_clock: Any) -> None:
    store = SlowStore()
    with trio.CancelScope() as scope:
        async with record_call(store, "c", transport="browser", flush_timeout=3.0) as rec:
            rec.on_event(final("x"))
            rec.on_event(final("y"))
            scope.cancel()
            await trio.sleep(1)
    assert scope.cancelled_caught
    assert rec.outcome == "cancelled"
    # The store never came back: the flush gave up after 3 s and counted the loss.
    assert rec.dropped == 2 and store.batches == [] and store.ended == []
    assert trio.current_time() == pytest.approx(3.0, abs=0.01)


async def test_store_failure_never_fails_the_call(tmp_path: Path) -> None:
    async with open_sqlite_store(tmp_path / "calls.db") as store:
        await store.start_call("dup", at=1.0, transport="browser")
        # A duplicate id makes start_call fail: the call still runs, events count as dropped.
        async with record_call(store, "dup", transport="browser") as rec:
            await trio.testing.wait_all_tasks_blocked()
            for event in CONVERSATION:
                rec.on_event(event)
    assert rec.dropped == 7 and rec.written == 0


async def test_recorder_is_an_event_observer() -> None:
    from vantum.pipeline.session import EventObserver

    observer: EventObserver = CallRecorder("c")
    observer.on_event(final("x"))
    assert isinstance(SQLiteCallStore, type)


async def test_postgres_round_trip(postgres_dsn: str) -> None:
    dsn = postgres_dsn
    call_id = f"pytest-{os.getpid()}-{trio.current_time()}"
    async with open_store(dsn) as store:
        meta = {"agent": "concierge"}
        async with record_call(
            store, call_id, transport="browser", meta=meta, wall_clock=Clock()
        ) as rec:
            for event in CONVERSATION:
                rec.on_event(event)
            rec.on_event(final("nul\x00char"))
        record = await store.get_call(call_id)
        assert record is not None and record.summary.outcome == "completed"
        assert record.summary.agent == "concierge"
        assert record.transcript()[:3] == [
            ("caller", "hello there"),
            ("assistant", "Hi!"),
            ("assistant", "How can I help? 🙂"),
        ]
        assert record.transcript()[3] == ("caller", "nul\ufffdchar")
        assert call_id in [c.call_id for c in await store.list_calls(limit=1000)]
    async with open_store(dsn) as store:  # a new connection (a restart) sees the same
        again = await store.get_call(call_id)
        assert again is not None and again.events == record.events


async def test_the_agent_a_call_ran_is_kept_in_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    async with open_store(url) as store:
        async with record_call(store, "a1", transport="twilio", meta={"agent": "support"}):
            pass
        async with record_call(store, "a2", transport="browser"):
            pass
    async with open_store(url) as reopened:
        agents = {c.call_id: c.agent for c in await reopened.list_calls()}
    assert agents == {"a1": "support", "a2": None}
