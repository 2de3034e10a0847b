"""Twilio's AMD verdict crosses workers through the call registry.

With ``vantum serve --workers N`` the AMD callback (``/twilio/amd``) and the call's
media stream may land on different workers. Proves, on a real ``redis-server`` with
two :class:`RedisCalls` (two workers, each its own connections): a verdict reported
on one reaches a waiter on the other, whether the waiter started before or after
the report; one waiter takes it; a wait with no verdict times out with None; the
dialer's ``on_amd`` reports through the registry it is given; with Redis down the
verdict still reaches a stream on the same worker. And :class:`LocalCalls` keeps the
in-process semantics (which is why several workers without Redis lose verdicts).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import coredis
import pytest
import trio
import trio.testing

from vantum.config import Config
from vantum.pipeline.session import Engines
from vantum.server.app import VantumApp
from vantum.server.auth import new_secret
from vantum.server.cluster import LocalCalls
from vantum.server.metrics import ServerMetrics
from vantum.server.redis_calls import AMD_KEEP_S, RedisCalls
from vantum.testing.memory import ScriptedLLM, ScriptedSTT, ScriptedTTS
from vantum.testing.redis_server import RedisServer, redis_server_path, run_redis
from vantum.transports.amd import AmdVerdicts
from vantum.transports.twilio_dial import OutboundDialer

needs_redis = pytest.mark.skipif(
    redis_server_path() is None,
    reason="SKIPPED LOUDLY: redis-server is not installed; run scripts/install-services.sh",
)


@asynccontextmanager
async def worker(url: str, name: str) -> AsyncIterator[RedisCalls]:
    """One worker's view of the cluster: its own clients, as ``open_redis_calls``."""
    client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    amd_client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    async with client, amd_client:
        yield RedisCalls(
            client,
            Config(),
            ServerMetrics(),
            deliver=lambda _: False,
            local_calls=list,
            draining=lambda: False,
            me=name,
            amd_client=amd_client,
        )


@asynccontextmanager
async def two_workers(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisCalls, RedisCalls]]:
    async with (
        run_redis(tmp_path) as redis,
        worker(redis.url, "a") as a,
        worker(redis.url, "b") as b,
    ):
        yield redis, a, b


@needs_redis
async def test_a_verdict_reported_on_one_worker_reaches_a_stream_waiting_on_another(
    tmp_path: Path,
) -> None:
    async with two_workers(tmp_path) as (_, a, b):
        with trio.fail_after(10):
            got: list[str | None] = []

            async def stream() -> None:
                got.append(await b.wait_amd("CA1", 30))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream)
                await trio.testing.wait_all_tasks_blocked()  # B is in its BLPOP
                await a.report_amd("CA1", "machine_end_beep")
            # Well within the 30 s bound: the report ended the wait, not the timeout.
            assert got == ["machine_end_beep"]


@needs_redis
async def test_a_verdict_reported_before_the_stream_asks_waits_for_it(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as (_, a, b):
        with trio.fail_after(10):
            await a.report_amd("CA2", "human")
            ttl = await a.client.ttl("vantum:amd:CA2")
            assert 0 < ttl <= AMD_KEEP_S  # a verdict no stream asks for goes away
            assert await b.wait_amd("CA2", 30) == "human"
            # Taken: one stream acts on it, a second wait finds nothing.
            assert await a.wait_amd("CA2", 0.2) is None
            assert await b.wait_amd("CA2", 0) is None
            assert await a.client.exists(["vantum:amd:CA2"]) == 0


@needs_redis
async def test_no_verdict_times_out_with_none(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as (_, a, b):
        await a.report_amd("CA-other", "human")
        start = trio.current_time()
        with trio.fail_after(5):
            assert await b.wait_amd("CA3", 0.3) is None
        assert trio.current_time() - start >= 0.3
        assert await b.wait_amd("CA-other", 0) == "human"  # other calls' verdicts untouched


@needs_redis
async def test_the_dialers_amd_callback_reports_through_the_registry(tmp_path: Path) -> None:
    async with two_workers(tmp_path) as (_, a, b):
        dialer = OutboundDialer(Config(), amd=lambda: a)
        with trio.fail_after(10):
            await dialer.on_amd("dial1", {"CallSid": "CA4", "AnsweredBy": "fax"})
            assert await b.wait_amd("CA4", 5) == "fax"


@needs_redis
async def test_with_redis_down_the_verdict_still_reaches_its_own_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with two_workers(tmp_path) as (redis, a, b):
        await redis.stop()
        with trio.fail_after(10):
            await a.report_amd("CA5", "machine_start")
            await a.report_amd("CA6", "human")
            assert not a.up
            fallbacks = [r for r in caplog.records if "AMD verdicts reach only" in r.message]
            assert len(fallbacks) == 1  # said once, not per verdict
            assert await a.wait_amd("CA5", 5) == "machine_start"
            assert await b.wait_amd("CA6", 0.3) is None  # lost across workers, bounded


async def test_local_calls_hand_the_verdict_over_in_this_process() -> None:
    calls = LocalCalls(lambda _: False)
    got: list[str | None] = []

    async def stream() -> None:
        got.append(await calls.wait_amd("CA7", 30))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream)
        await trio.testing.wait_all_tasks_blocked()
        await calls.report_amd("CA7", "human")
    assert got == ["human"]
    await calls.report_amd("CA8", "machine_end_other")
    assert await calls.wait_amd("CA8", 0) == "machine_end_other"
    assert await calls.wait_amd("CA8", 0) is None


async def test_local_calls_time_out_and_do_not_reach_another_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    here, there = LocalCalls(lambda _: False), LocalCalls(lambda _: False)
    await here.report_amd("CA9", "machine_start")
    start = trio.current_time()
    assert await there.wait_amd("CA9", 5) is None
    assert trio.current_time() - start == pytest.approx(5)


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    verdicts = AmdVerdicts()
    with trio.move_on_after(1) as scope:
        scope.cancel()
        await verdicts.wait("CA10", 30)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(verdicts.wait, "CA11", 30)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert verdicts._events == {}


async def test_the_apps_dialer_hands_verdicts_through_the_apps_registry(tmp_path: Path) -> None:
    config = Config(auth_secret=new_secret())
    app = VantumApp(config, Engines(ScriptedSTT([]), ScriptedLLM(), ScriptedTTS()))
    assert app.dialer.amd() is app.calls
    if redis_server_path() is None:
        return
    async with two_workers(tmp_path) as (_, a, b):
        app.calls = a  # as ``vantum serve`` does once Redis is configured
        await app.dialer.on_amd(None, {"CallSid": "CA12", "AnsweredBy": "human"})
        with trio.fail_after(10):
            assert await b.wait_amd("CA12", 5) == "human"
