"""Two real workers sharing a real ``redis-server``: the cluster's limits and commands.

Proves, over real sockets: the session cap holds across two workers (a worker with
room of its own refuses once the cluster is full); a hang-up from another process
reaches the call on whichever worker holds it; a killed worker's calls expire from
the registry and are counted; Redis stopped and restarted mid-run drops no live call,
new calls are admitted meanwhile (fail open), and the registry is whole again.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import coredis
import pytest
import trio
from cluster_helpers import ServerProcess, health, metrics_text, serve_process
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA

from vantum.config import Config
from vantum.protocol import events as ev
from vantum.server.auth import new_secret
from vantum.server.metrics import ServerMetrics
from vantum.server.redis_calls import EXPIRED, EXPIRED_TOTAL, HEARTBEATS, RedisCalls
from vantum.testing.fake_cartesia import serve_fake_cartesia
from vantum.testing.fake_deepgram import serve_fake_deepgram
from vantum.testing.fake_openai import serve_fake_openai
from vantum.testing.raw_ws import RawWebSocket
from vantum.testing.redis_server import RedisServer, redis_server_path, run_redis

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        redis_server_path() is None,
        reason="SKIPPED LOUDLY: redis-server is not installed; run scripts/install-services.sh",
    ),
]

CAP = 2


@asynccontextmanager
async def cluster(tmp_path: Path, **env: str) -> AsyncIterator[tuple[ServerProcess, RedisServer]]:
    async with (
        run_redis(tmp_path) as redis,
        serve_fake_deepgram(FAST_DG) as dg,
        serve_fake_openai(FAST_OA) as oa,
        serve_fake_cartesia(FAST_CA) as ca,
    ):
        full_env = {
            "DEEPGRAM_API_KEY": dg.api_key,
            "DEEPGRAM_URL": dg.url,
            "OPENAI_API_KEY": oa.api_key,
            "OPENAI_BASE_URL": oa.base_url,
            "CARTESIA_API_KEY": ca.api_key,
            "CARTESIA_URL": ca.url,
            "VANTUM_RECORDS_URL": "",
            "VANTUM_GRACEFUL_TIMEOUT": "2",
            "VANTUM_REDIS_URL": redis.url,
            "VANTUM_REDIS_CALL_TTL_S": "1.5",
            # These tests place calls back to back from one address; the connect rate
            # (2/s, burst 20, cluster-wide with Redis) is not what they test.
            "VANTUM_CONNECT_RATE": "0",
            **env,
        }
        async with serve_process(full_env, new_secret()) as server:
            yield server, redis


@asynccontextmanager
async def outsider(url: str) -> AsyncIterator[tuple[RedisCalls, coredis.Redis[str]]]:
    """The cluster as another process sees it (the calls API of some other worker)."""
    client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
    async with client:
        yield (
            RedisCalls(
                client,
                Config(),
                ServerMetrics(),
                deliver=lambda _: False,
                local_calls=list,
                draining=lambda: False,
                me="test",
            ),
            client,
        )


async def _place(server: ServerProcess, stack: AsyncExitStack) -> RawWebSocket | None:
    """One call: the socket if admitted, None if refused for capacity (1013)."""
    call = await stack.enter_async_context(
        RawWebSocket.connect(server.ws_url, token=server.token())
    )
    first = await call.receive_event()
    if first["eventType"] == ev.ERR_CAPACITY:
        closed = await call.wait_closed()
        assert closed.code == ev.CLOSE_TRY_AGAIN
        return None
    assert first["eventType"] == ev.CONNECTION_ACK, first
    call.session_id = first["sessionId"]
    return call


async def _sessions(server: ServerProcess) -> dict[int, int]:
    return {i: (await health(w.side_url))["sessions"] for i, w in server.workers().items()}


async def _refused(server: ServerProcess, index: int) -> float:
    text = await metrics_text(server.workers()[index].side_url)
    for line in text.splitlines():
        if line.startswith(f'vantum_sessions_refused_total{{reason="{ev.ERR_CAPACITY}"}}'):
            return float(line.split()[-1])
    return 0.0


async def _answers(call: RawWebSocket) -> None:
    await call.send_event(ev.TEXT_INPUT, {"text": "are you there"})
    while (await call.receive_event())["eventType"] != ev.RESPONSE_COMPLETE:
        pass


async def test_cap_hangup_and_a_dead_workers_calls_hold_across_two_workers(
    tmp_path: Path,
) -> None:
    async with (
        cluster(tmp_path, VANTUM_MAX_SESSIONS=str(CAP)) as (server, redis),
        outsider(redis.url) as (api, client),
        AsyncExitStack() as stack,
    ):
        with trio.fail_after(90):
            # Fill the cluster: CAP calls, wherever the kernel puts them.
            calls: dict[str, int] = {}
            sockets: dict[str, RawWebSocket] = {}
            while len(calls) < CAP:
                before = await _sessions(server)
                call = await _place(server, stack)
                assert call is not None
                after = await _sessions(server)
                (holder,) = [i for i in after if after[i] > before[i]]
                calls[call.session_id] = holder
                sockets[call.session_id] = call
            # Every further call is refused, also by a worker with room of its own.
            for _ in range(40):
                assert await _place(server, stack) is None
                local = await _sessions(server)
                assert sum(local.values()) == CAP
                roomy = [i for i in local if local[i] < CAP]
                if roomy and all([await _refused(server, i) > 0 for i in roomy]):
                    break
            else:
                raise AssertionError("no worker with room of its own refused a call")
            # A hang-up from outside reaches each call on the worker holding it.
            victim_sid = next(iter(calls))
            (other_sid,) = [sid for sid in calls if sid != victim_sid]
            assert await api.hangup(victim_sid)
            closed = await sockets[victim_sid].wait_closed()
            assert (closed.code, closed.reason) == (ev.CLOSE_NORMAL, "call hung up")
            assert not await api.hangup(victim_sid)  # released: no one holds it now
            # A killed worker's call expires from the registry and is counted.
            dead = server.workers()[calls[other_sid]]
            os.kill(dead.pid, signal.SIGKILL)
            expired = await client.blpop([EXPIRED], timeout=10)
            assert expired is not None and expired[1] == other_sid
            assert int(await client.get(EXPIRED_TOTAL) or 0) == 1
            # Its place is free again: the cluster admits a call.
            assert await _place(server, stack) is not None


async def test_redis_stopped_and_restarted_mid_run_drops_no_call(tmp_path: Path) -> None:
    async with cluster(tmp_path) as (server, redis), AsyncExitStack() as stack:
        with trio.fail_after(90):
            live = []
            for _ in range(4):
                call = await _place(server, stack)
                assert call is not None
                live.append(call)
            await redis.stop()
            # Down: calls in progress go on, and new calls are admitted (fail open).
            for call in live:
                await _answers(call)
            latecomer = await _place(server, stack)
            assert latecomer is not None
            live.append(latecomer)
            await redis.start()  # empty: everything it held is gone
            async with outsider(redis.url) as (api, client):
                # Each worker's heartbeat puts its calls back (one beat of each).
                async with client.pubsub(channels=[HEARTBEATS]) as beats:
                    seen: set[str] = set()
                    async for message in beats:
                        if message["type"] == "message":
                            seen.add(json.loads(str(message["data"]))["worker"])
                            if len(seen) == 2:
                                break
                # The registry is whole: every call, the one admitted while Redis was
                # down too, can be hung up through it, and none had been dropped.
                for call in live:
                    await _answers(call)
                for call in live:
                    assert await api.hangup(call.session_id), call.session_id
                    closed = await call.wait_closed()
                    assert closed.code == ev.CLOSE_NORMAL


async def test_fail_closed_refuses_new_calls_while_redis_is_down(tmp_path: Path) -> None:
    async with cluster(tmp_path, VANTUM_REDIS_FAIL="closed") as (server, redis):
        async with AsyncExitStack() as stack:
            with trio.fail_after(60):
                call = await _place(server, stack)
                assert call is not None
                await redis.stop()
                assert await _place(server, stack) is None
                await _answers(call)  # the call in progress is untouched


async def test_a_server_starts_and_admits_while_redis_is_down(tmp_path: Path) -> None:
    """Redis unreachable from the start (fail open): the server still listens and
    takes calls on its own limits instead of waiting for Redis."""
    nowhere = RedisServer(_unused_port(), tmp_path)  # never started
    async with (
        serve_fake_deepgram(FAST_DG) as dg,
        serve_fake_openai(FAST_OA) as oa,
        serve_fake_cartesia(FAST_CA) as ca,
    ):
        env = {
            "DEEPGRAM_API_KEY": dg.api_key,
            "DEEPGRAM_URL": dg.url,
            "OPENAI_API_KEY": oa.api_key,
            "OPENAI_BASE_URL": oa.base_url,
            "CARTESIA_API_KEY": ca.api_key,
            "CARTESIA_URL": ca.url,
            "VANTUM_RECORDS_URL": "",
            "VANTUM_REDIS_URL": nowhere.url,
        }
        async with serve_process(env, new_secret(), workers=1) as server, AsyncExitStack() as stack:
            with trio.fail_after(30):
                call = await _place(server, stack)
                assert call is not None
                await _answers(call)
                await server.wait_for("Redis unreachable")


def _unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
