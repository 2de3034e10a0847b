"""Webhooks: signatures, retry policy, payloads, and delivery from the durable outbox
to a receiver over real sockets (vantum/webhooks, vantum/records outbox)."""

from __future__ import annotations

import random
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import given

from vantum.pipeline import events as e
from vantum.records import CallStore, open_store, payloads, record_call
from vantum.records.sqlite import open_sqlite_store
from vantum.records.store import CallEvent
from vantum.testing.webhook_receiver import Received, WebhookReceiver, open_webhook_receiver
from vantum.webhooks.dispatcher import DeliveryReport, WebhookDispatcher
from vantum.webhooks.retry import RetryPolicy, retryable_status
from vantum.webhooks.signing import SignatureError, sign, verify

SECRET = b"whsec-test-0123456789abcdef"
T0 = 1_800_000_000.0


def wall() -> float:
    """Wall clock in trio's (mock) time: outbox times and waits agree."""
    return T0 + trio.current_time()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- signing ----------------------------------------------------------------------------


@given(st.binary(max_size=2000), st.integers(0, 2**40))
def test_signature_round_trip(body: bytes, stamp: int) -> None:
    assert verify(SECRET, sign(SECRET, stamp, body), body, now=stamp + 10) == stamp


@given(st.binary(min_size=1, max_size=200), st.integers(0, 199))
def test_signature_refuses_a_changed_body(body: bytes, index: int) -> None:
    header = sign(SECRET, 1000, body)
    changed = bytearray(body)
    changed[index % len(body)] ^= 1
    with pytest.raises(SignatureError, match="does not match"):
        verify(SECRET, header, bytes(changed), now=1000)


def test_signature_refuses_replays_and_other_secrets() -> None:
    header = sign(SECRET, 1000, b"{}")
    with pytest.raises(SignatureError, match="window"):
        verify(SECRET, header, b"{}", now=1000 + 301)
    with pytest.raises(SignatureError, match="does not match"):
        verify(b"another secret", header, b"{}", now=1000)
    with pytest.raises(SignatureError, match="no t="):
        verify(SECRET, "", b"{}", now=1000)
    rotated = header + ",v1=" + "0" * 64  # a second (old-secret) signature is ignored
    assert verify(SECRET, rotated, b"{}", now=1000) == 1000


# --- retry policy -----------------------------------------------------------------------


@given(st.integers(1, 40), st.integers(0, 2**32))
def test_backoff_grows_is_jittered_and_capped(attempts: int, seed: int) -> None:
    policy = RetryPolicy(base_s=2, factor=2, cap_s=600)
    delay = policy.delay(attempts, random.Random(seed))
    ceiling = min(600, 2 * 2 ** (attempts - 1))
    assert ceiling / 2 <= delay <= ceiling


def test_retries_stop_after_the_bounded_period() -> None:
    policy = RetryPolicy(base_s=2, cap_s=600, max_age_s=3600)
    assert policy.next_attempt(attempts=1, created_at=0, now=10) is not None
    assert policy.next_attempt(attempts=1, created_at=0, now=3599.5) is None


def test_which_statuses_are_retried() -> None:
    assert [s for s in (400, 401, 403, 404, 408, 410, 422, 429) if retryable_status(s)] == [
        408,
        429,
    ]
    assert all(retryable_status(s) for s in (500, 502, 503, 504))


# --- payloads ---------------------------------------------------------------------------


def test_transcript_turns_mark_the_answer_a_barge_in_cut() -> None:
    def ev(seq: int, kind: str, at: float, **payload: Any) -> CallEvent:
        return CallEvent(seq, kind, payload, at)

    events = [
        ev(1, "transcript.final", 10.0, transcript="book a table"),
        ev(2, "conversation.response.text", 10.4, utteranceId="u1", text="Sure."),
        ev(3, "conversation.response.text", 10.6, utteranceId="u1", text="For how many?"),
        ev(4, "conversation.response.complete", 11.0, utteranceId="u1"),
        ev(5, "metrics.turn", 11.0, utteranceId="u1", voiceToVoiceMs=420.0),
        ev(6, "transcript.final", 12.0, transcript="four"),
        ev(7, "conversation.response.text", 12.5, utteranceId="u2", text="Great, four"),
        ev(8, "audio.output.cancel", 12.9, utteranceId="u2", reason="barge_in"),
        ev(9, "metrics.turn", 12.9, utteranceId="u2", voiceToVoiceMs=380.0),
    ]
    turns = payloads.transcript_turns(events)
    assert [(t["speaker"], t["text"]) for t in turns] == [
        ("caller", "book a table"),
        ("agent", "Sure. For how many?"),
        ("caller", "four"),
        ("agent", "Great, four"),
    ]
    assert [t.get("interrupted") for t in turns if t["speaker"] == "agent"] == [False, True]
    assert (turns[1]["start"], turns[1]["end"]) == (10.4, 11.0)
    latency = payloads.latency_summary(events)
    assert latency["turns"] == 2
    assert latency["summary"]["voice_to_voice_ms"] == {"p50": 400.0, "p95": 420.0, "max": 420.0}


# --- the outbox -------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        dsn: str = request.getfixturevalue("postgres_dsn")
        return dsn
    return str(tmp_path / "calls.db")


async def test_outbox_rows_commit_with_the_record_or_not_at_all(store_url: str) -> None:
    call_id = f"outbox-{random.getrandbits(48):x}"
    async with open_store(store_url) as store:
        await store.start_call(
            call_id, at=T0, transport="browser", webhooks=["http://a/", "http://b/"]
        )
        with pytest.raises(Exception):  # noqa: B017 - the duplicate id, in either backend
            await store.start_call(call_id, at=T0, transport="browser", webhooks=["http://a/"])
        await store.add_event(call_id, "transcript.final", {"transcript": "hi"}, T0 + 1)
        await store.end_call(call_id, "completed", at=T0 + 2)
        claimed = await store.claim_deliveries(now=T0 + 3, limit=100, lease_s=60)
    mine = [d for d in claimed if d.call_id == call_id]
    # The refused duplicate start queued nothing; the end went to the start's URLs.
    assert sorted((d.event_type, d.url) for d in mine) == [
        ("call.ended", "http://a/"),
        ("call.ended", "http://b/"),
        ("call.started", "http://a/"),
        ("call.started", "http://b/"),
    ]
    ended = [d for d in mine if d.event_type == "call.ended"]
    assert ended[0].event_id == ended[1].event_id  # one event, two deliveries
    assert '"transcript":[{"speaker":"caller","text":"hi"' in ended[0].body


async def test_settled_deliveries_are_pruned_pending_ones_kept(store_url: str) -> None:
    call_id = f"prune-{random.getrandbits(48):x}"
    async with open_store(store_url) as store:
        await store.start_call(call_id, at=T0, transport="browser", webhooks=["http://a/"])
        await store.end_call(call_id, "completed", at=T0 + 1)
        mine = [
            d
            for d in await store.claim_deliveries(now=T0 + 2, limit=10_000, lease_s=60)
            if d.call_id == call_id
        ]
        started, ended = sorted(mine, key=lambda d: d.event_type != "call.started")
        await store.settle_delivery(started.delivery_id, state="delivered", at=T0 + 3)
        await store.settle_delivery(ended.delivery_id, state="pending", at=T0 + 3, retry_at=T0)
        assert await store.prune_outbox(settled_before=T0 + 3) == 0
        assert await store.prune_outbox(settled_before=T0 + 4) >= 1
        again = await store.claim_deliveries(now=T0 + 5, limit=10_000, lease_s=60)
        assert [d.delivery_id for d in again if d.call_id == call_id] == [ended.delivery_id]


async def test_calls_a_restart_closes_send_call_failed(store_url: str) -> None:
    call_id = f"orphan-{random.getrandbits(48):x}"
    async with open_store(store_url) as store:
        await store.start_call(call_id, at=T0, transport="twilio", webhooks=["http://a/"])
    async with open_store(store_url) as store:  # "the next process"
        assert await store.close_orphans(at=T0 + 5) >= 1
        claimed = await store.claim_deliveries(now=T0 + 6, limit=1000, lease_s=60)
    kinds = {d.event_type for d in claimed if d.call_id == call_id}
    assert kinds == {"call.started", "call.failed"}


# --- delivery over real sockets ---------------------------------------------------------


@asynccontextmanager
async def dispatching(
    store: CallStore, *, policy: RetryPolicy | None = None, workers: int = 4
) -> AsyncIterator[tuple[WebhookDispatcher, trio.MemoryReceiveChannel[DeliveryReport]]]:
    reports_tx, reports_rx = trio.open_memory_channel[DeliveryReport](1000)
    dispatcher = WebhookDispatcher(
        store,
        SECRET,
        policy=policy or RetryPolicy(base_s=2, cap_s=60, max_age_s=3600, timeout_s=5),
        wall_clock=wall,
        rand=random.Random(7),
        reports=reports_tx,
        workers=workers,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(dispatcher.run)
        yield dispatcher, reports_rx
        nursery.cancel_scope.cancel()


async def one_call(store: CallStore, call_id: str, url: str, waker: WebhookDispatcher) -> None:
    async with record_call(
        store, call_id, transport="browser", webhooks=[url], waker=waker, wall_clock=wall
    ) as rec:
        rec.on_event(e.TranscriptFinal(text="hello", confidence=0.9, at_ms=1, language="en-US"))
        rec.on_event(e.ResponseText(utterance_id="u1", text="Hi there!"))


async def take(rx: trio.MemoryReceiveChannel[Received], n: int) -> list[Received]:
    return [await rx.receive() for _ in range(n)]


async def test_delivered_signed_with_the_call_in_the_body(store_url: str) -> None:
    call_id = f"c1-{random.getrandbits(48):x}"  # the Postgres database outlives a test
    async with open_store(store_url) as store:
        # Rows other tests left in the shared Postgres database: out of the way.
        await store.claim_deliveries(now=wall() + 1e6, limit=10_000, lease_s=1e9)
        async with (
            open_webhook_receiver(SECRET, wall_clock=wall) as receiver,
            dispatching(store) as (dispatcher, reports),
        ):
            await one_call(store, call_id, receiver.url, dispatcher)
            got = sorted(await take(receiver.requests, 2), key=lambda r: r.event_type)
            assert [(r.event_type, r.signature_error, r.status) for r in got] == [
                ("call.ended", None, 200),
                ("call.started", None, 200),
            ]
            ended = got[0].body
            assert ended["id"] == got[0].event_id == got[0].headers["vantum-event-id"]
            assert ended["data"]["call_id"] == call_id
            assert ended["data"]["end_reason"] == "completed"
            assert [(t["speaker"], t["text"]) for t in ended["data"]["transcript"]] == [
                ("caller", "hello"),
                ("agent", "Hi there!"),
            ]
            assert {(await reports.receive()).result for _ in range(2)} == {"delivered"}
            pending, _ = await store.outbox_stats()
            assert pending == 0 or store_url.startswith("postgres")  # others' leased rows


async def test_receiver_down_retries_with_backoff_then_delivers(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    port = free_port()
    receiver = WebhookReceiver(SECRET, wall_clock=wall)
    url = f"http://127.0.0.1:{port}/hooks"
    async with (
        open_sqlite_store(tmp_path / "calls.db", gather_s=0) as store,
        dispatching(store) as (dispatcher, reports),
    ):
        await one_call(store, "c1", url, dispatcher)
        waits: list[float] = []
        for attempt in range(1, 4):  # connection refused, three times over
            failed = [await reports.receive() for _ in range(2)]
            assert {r.result for r in failed} == {"retry"}
            assert all(r.delivery.attempts == attempt - 1 for r in failed)
            due = max(r.retry_at or 0 for r in failed)
            waits.append(due - wall())
            ceiling = 2 * 2 ** (attempt - 1)
            assert all(ceiling / 2 <= (r.retry_at or 0) - wall() <= ceiling for r in failed)
            mock_clock.jump(due - wall())
        async with open_webhook_receiver(SECRET, port=port, receiver=receiver):
            assert {(await reports.receive()).result for _ in range(2)} == {"delivered"}
            got = await take(receiver.requests, 2)
        assert {r.event_type for r in got} == {"call.started", "call.ended"}
        assert all(
            r.signature_error is None and r.headers["vantum-delivery-attempt"] == "4" for r in got
        )
        assert waits[0] < waits[1] < waits[2]  # exponential, whatever the jitter drew


async def test_pending_deliveries_resume_after_a_restart(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hooks"
    db = tmp_path / "calls.db"
    async with open_sqlite_store(db, gather_s=0) as store:
        async with dispatching(store) as (dispatcher, reports):
            await one_call(store, "c1", url, dispatcher)  # receiver down: both retry
            first = [await reports.receive() for _ in range(2)]
        # A call that ended as the process died: its rows were claimed (leased) but
        # never attempted.
        await one_call(store, "c2", url, dispatcher)
        leased = await store.claim_deliveries(now=wall(), limit=10, lease_s=120)
        assert {d.call_id for d in leased} == {"c2"}
    receiver = WebhookReceiver(SECRET, wall_clock=wall)
    async with (
        open_webhook_receiver(SECRET, port=port, receiver=receiver),
        open_sqlite_store(db, gather_s=0) as store,  # the restarted server
        dispatching(store) as (_, reports),
    ):
        mock_clock.jump(max(r.retry_at or 0 for r in first) - wall())
        got = await take(receiver.requests, 2)
        assert {(r.body["data"]["call_id"], r.event_type) for r in got} == {
            ("c1", "call.started"),
            ("c1", "call.ended"),
        }
        assert {(await reports.receive()).result for _ in range(2)} == {"delivered"}
        mock_clock.jump(121)  # the dead process's lease lapses
        got = await take(receiver.requests, 2)
        assert {(r.body["data"]["call_id"], r.event_type) for r in got} == {
            ("c2", "call.started"),
            ("c2", "call.ended"),
        }
        assert all(r.signature_error is None for r in got)


async def test_a_4xx_is_marked_failed_and_not_retried(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    async with (
        open_sqlite_store(tmp_path / "calls.db", gather_s=0) as store,
        open_webhook_receiver(SECRET, status=410, wall_clock=wall) as receiver,
        dispatching(store) as (dispatcher, reports),
    ):
        await one_call(store, "c1", receiver.url, dispatcher)
        results = [await reports.receive() for _ in range(2)]
        assert {(r.result, r.status) for r in results} == {("failed", 410)}
        await take(receiver.requests, 2)
        assert (await store.outbox_stats())[0] == 0
        for _ in range(5):  # hours later, nothing more was sent
            mock_clock.jump(3600)
            dispatcher.nudge()
            await trio.testing.wait_all_tasks_blocked()
        assert receiver.requests.statistics().current_buffer_used == 0


async def test_a_burst_of_200_calls_ending_together_is_all_delivered(tmp_path: Path) -> None:
    """The receiver is stuck while 200 calls start and end: no call waits for it
    (each call's block returns), and once it answers every event arrives."""
    calls = 200
    async with (
        open_sqlite_store(tmp_path / "calls.db") as store,
        open_webhook_receiver(SECRET, wall_clock=wall) as receiver,
        dispatching(store, policy=RetryPolicy(timeout_s=120), workers=8) as (dispatcher, _),
    ):
        receiver.gate = trio.Event()
        ended: list[str] = []

        async def call(i: int) -> None:
            async with record_call(
                store,
                f"c{i}",
                transport="browser",
                webhooks=[receiver.url],
                waker=dispatcher,
                wall_clock=wall,
            ) as rec:
                rec.on_event(
                    e.TranscriptFinal(text=f"caller {i}", confidence=1.0, at_ms=1, language="en")
                )
            ended.append(f"c{i}")

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                for i in range(calls):
                    nursery.start_soon(call, i)
        assert len(ended) == calls  # every call ended while no webhook was answered
        receiver.gate.set()
        with trio.fail_after(120):
            got = await take(receiver.requests, 2 * calls)
        seen = {(r.body["data"]["call_id"], r.event_type) for r in got}
        assert seen == {(f"c{i}", t) for i in range(calls) for t in ("call.started", "call.ended")}
        assert all(r.signature_error is None for r in got)
