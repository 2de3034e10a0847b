"""``vantum serve --workers 2`` as deployed: real processes on one real socket.

The fake providers run in this process; the server is the CLI in its own process with
two workers. Proves: both workers take calls; killing one worker ends its calls only,
the supervisor restarts it and counts it, the other worker's calls go on answering;
SIGTERM to the supervisor drains every worker (close 1001) and it exits 0 on time.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from cluster_helpers import (
    ServerProcess,
    health,
    metrics_text,
    serve_process,
    worker_sessions,
)
from cluster_helpers import answers as _answers
from cluster_helpers import calls_on_both as _calls_on_both
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA

from vantum.protocol import events as ev
from vantum.server.auth import new_secret
from vantum.testing.fake_cartesia import serve_fake_cartesia
from vantum.testing.fake_deepgram import serve_fake_deepgram
from vantum.testing.fake_openai import serve_fake_openai
from vantum.testing.raw_ws import RawWebSocket, ServerClosed

GRACEFUL_S = 2.0

pytestmark = pytest.mark.slow


def _fake_env(dg: Any, oa: Any, ca: Any, tmp: str) -> dict[str, str]:
    return {
        "DEEPGRAM_API_KEY": dg.api_key,
        "DEEPGRAM_URL": dg.url,
        "OPENAI_API_KEY": oa.api_key,
        "OPENAI_BASE_URL": oa.base_url,
        "CARTESIA_API_KEY": ca.api_key,
        "CARTESIA_URL": ca.url,
        "VANTUM_RECORDS_URL": f"sqlite:///{tmp}/calls.db",
        "VANTUM_GRACEFUL_TIMEOUT": str(GRACEFUL_S),
        # These tests reconnect until a restarted worker answers; the per-address
        # connect rate (2/s, burst 20) is not what they test.
        "VANTUM_CONNECT_RATE": "0",
    }


@asynccontextmanager
async def two_workers(tmp_path: os.PathLike[str]) -> AsyncIterator[ServerProcess]:
    """``vantum serve --workers 2`` against the fake providers, for one test."""
    async with (
        serve_fake_deepgram(FAST_DG) as dg,
        serve_fake_openai(FAST_OA) as oa,
        serve_fake_cartesia(FAST_CA) as ca,
        serve_process(_fake_env(dg, oa, ca, str(tmp_path)), new_secret()) as server,
    ):
        yield server


async def test_two_workers_share_the_port_and_a_killed_worker_is_restarted_alone(
    tmp_path: os.PathLike[str],
) -> None:
    async with two_workers(tmp_path) as server, AsyncExitStack() as stack:
        with trio.fail_after(60):
            by_worker = await _calls_on_both(server, stack)
            victim = server.workers()[0]
            mark = len(server.log)
            os.kill(victim.pid, signal.SIGKILL)
            # Its calls end with it (the kernel closes its sockets)...
            for call in by_worker[0]:
                closed = await call.wait_closed()
                assert closed.code is None  # no close frame: the process is gone
            # ...the supervisor says so, counts it, and a new worker 0 is ready.
            await server.wait_for(r"worker 0 \(pid \d+\) exited with signal SIGKILL", after=mark)
            await server.wait_for(r"worker 0 ready", after=mark)
            reborn = server.workers(after=mark)[0]
            assert reborn.pid != victim.pid
            assert 'vantum_worker_restarts_total{worker="0"} 1.0' in await metrics_text(
                reborn.side_url
            )
            # The other worker's calls never noticed: they still get answers.
            for call in by_worker[1]:
                await _answers(call)
            survivor = server.workers()[1]
            assert (await health(survivor.side_url))["sessions"] == len(by_worker[1])
            # New calls are served (by either worker) after the restart.
            fresh = await stack.enter_async_context(
                RawWebSocket.connect(server.ws_url, token=server.token())
            )
            await fresh.read_ack()
            await _answers(fresh)


async def test_sigterm_drains_every_worker_and_the_supervisor_exits_on_time(
    tmp_path: os.PathLike[str],
) -> None:
    async with two_workers(tmp_path) as server, AsyncExitStack() as stack:
        with trio.fail_after(60):
            by_worker = await _calls_on_both(server, stack)
            pids = [w.pid for w in server.workers().values()]
            signalled_at = trio.current_time()
            server.process.send_signal(signal.SIGTERM)
            codes = []
            for call in [*by_worker[0], *by_worker[1]]:
                try:
                    await call.receive_event()  # the shutdown notice, then the close
                    closed = await call.wait_closed()
                except ServerClosed as exc:
                    closed = exc.closed
                codes.append(closed.code)
            await server.process.wait()
            took = trio.current_time() - signalled_at
        assert codes == [ev.CLOSE_GOING_AWAY] * len(codes), codes
        assert server.process.returncode == 0
        assert took < GRACEFUL_S + 2.0, took
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        drained = [line for line in server.log if re.search(r"draining \d+ session", line)]
        assert len(drained) == 2, drained


async def test_workers_drain_when_their_supervisor_is_killed(
    tmp_path: os.PathLike[str],
) -> None:
    """SIGKILL to the supervisor (no chance to stop anyone): each worker sees its stdin
    pipe close, drains its calls (1001) and exits, instead of serving on unsupervised."""
    async with two_workers(tmp_path) as server, AsyncExitStack() as stack:
        with trio.fail_after(60):
            by_worker = await _calls_on_both(server, stack)
            pids = [w.pid for w in server.workers().values()]
            server.process.kill()
            await server.process.wait()
            for call in [*by_worker[0], *by_worker[1]]:
                closed = await call.wait_closed()
                assert closed.code == ev.CLOSE_GOING_AWAY, closed
            await server.wait_for("the supervisor is gone: stopping")
            # The workers' stderr is the pipe this test reads: it ends when both exited.
            await server.wait_eof()
        assert all(_gone(pid) for pid in pids)


async def test_back_to_back_calls_spread_over_both_workers(
    tmp_path: os.PathLike[str],
) -> None:
    """Forty calls opened one after another (each held) land on both workers, about
    evenly. With every worker accepting from one inherited socket all forty went to
    worker 0 (issue 19); with SO_REUSEPORT the kernel hashes each connection onto a
    worker's own listener. Binomial(40, 1/2) falls below 8 on one side once in ~20000
    runs."""
    async with two_workers(tmp_path) as server, AsyncExitStack() as stack:
        with trio.fail_after(90):
            for _ in range(40):
                call = await stack.enter_async_context(
                    RawWebSocket.connect(server.ws_url, token=server.token())
                )
                await call.read_ack()
            counts = await worker_sessions(server)
        print(f"40 back-to-back calls per worker: {counts}")
        assert sum(counts.values()) == 40, counts
        assert min(counts.values()) >= 8, counts


async def test_a_busy_worker_does_not_lose_its_share_to_the_running_one(
    tmp_path: os.PathLike[str],
) -> None:
    """The imbalance, made deterministic: worker 1 is stopped (SIGSTOP: the extreme of
    a worker busy elsewhere) while 30 calls connect, and continued once every call is
    either answered or still waiting in a listen queue (read from /proc/net/tcp).
    Accepting from one shared socket, the running worker has taken all 30 by then;
    with a listener per worker the kernel queued worker 1's share on worker 1's own
    socket, and worker 1 answers it once it runs again. Binomial(30, 1/2) puts fewer
    than 5 on one side once in ~15000 runs."""
    async with two_workers(tmp_path) as server, AsyncExitStack() as stack:
        total = 30
        port = int(server.url.rsplit(":", 1)[1])
        stopped = server.workers()[1]
        connected = answered = 0
        settled = trio.Event()

        def check() -> None:
            if connected == total and answered + _listen_queued(port) == total:
                settled.set()

        def one_connected() -> None:
            nonlocal connected
            connected += 1
            check()

        async def call() -> None:
            nonlocal answered
            placed = await stack.enter_async_context(
                RawWebSocket.connect(
                    server.ws_url, token=server.token(), tcp_connected=one_connected
                )
            )
            await placed.read_ack()
            answered += 1
            check()

        with trio.fail_after(90):
            os.kill(stopped.pid, signal.SIGSTOP)
            try:
                async with trio.open_nursery() as nursery:
                    for _ in range(total):
                        nursery.start_soon(call)
                    await settled.wait()
                    os.kill(stopped.pid, signal.SIGCONT)
            finally:
                os.kill(stopped.pid, signal.SIGCONT)
            counts = await worker_sessions(server)
        print(f"30 calls with worker 1 stopped while they connected: {counts}")
        assert sum(counts.values()) == total, counts
        assert min(counts.values()) >= 5, counts


def _listen_queued(port: int) -> int:
    """Connections waiting in the accept queues of every IPv4 listener on ``port``
    (for a LISTEN socket, /proc/net/tcp's rx_queue is its accept backlog)."""
    queued = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            queued += int(queues.split(":")[1], 16)
    return queued


async def test_a_draining_worker_leaves_the_port_to_the_others(
    tmp_path: os.PathLike[str],
) -> None:
    """SIGTERM to one worker only: it drains its call, and from the drain's start the
    kernel sends every new call to the other worker (none refused with
    ``connection.error.shutdown``, none reset). Staying in the group, the draining
    worker would get its share of new calls and refuse each one."""
    async with two_workers(tmp_path) as server, AsyncExitStack() as stack:
        with trio.fail_after(60):
            by_worker = await _calls_on_both(server, stack)
            draining = server.workers()[0]
            mark = len(server.log)
            os.kill(draining.pid, signal.SIGTERM)
            await server.wait_for(r"left the port's group.*\[worker=0\]", after=mark)
            assert (await health(draining.side_url))["http_status"] == 503
            served = []
            for _ in range(12):
                call = await stack.enter_async_context(
                    RawWebSocket.connect(server.ws_url, token=server.token())
                )
                await call.read_ack()  # an ACK, not connection.error.shutdown
                served.append(call)
            on_other = (await health(server.workers()[1].side_url))["sessions"]
            assert on_other == len(by_worker[1]) + len(served)
            await _answers(served[-1])
            # The draining worker's own call ends with the drain (1001), then it exits
            # and the supervisor starts a new worker 0, which joins the group again.
            for call in by_worker[0]:
                try:
                    await call.receive_event()
                    closed = await call.wait_closed()
                except ServerClosed as exc:
                    closed = exc.closed
                assert closed.code == ev.CLOSE_GOING_AWAY, closed
            await server.wait_for(r"worker 0 ready", after=mark)


def _gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its new parent has not reaped yet."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def test_workers_still_starting_exit_when_their_supervisor_is_killed(
    tmp_path: os.PathLike[str],
) -> None:
    """Workers held up in start-up (here: a records database that accepts and never
    answers) when the supervisor dies must exit too, not hang on as orphans."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, _hold_forever, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        env = {
            "DEEPGRAM_API_KEY": "unused",
            "OPENAI_API_KEY": "unused",
            "CARTESIA_API_KEY": "unused",
            "VANTUM_RECORDS_URL": f"postgresql://nobody@127.0.0.1:{port}/silent",
        }
        async with serve_process(env, new_secret(), wait_listening=False) as server:
            with trio.fail_after(60):
                # Both workers got as far as opening the records store.
                for index in (0, 1):
                    await server.wait_for(rf"TTS engine: .*\[worker={index}\]")
                server.process.kill()
                await server.process.wait()
                await server.wait_eof()  # every worker's stderr closed: they exited
            assert sum("stopped before serving" in line for line in server.log) == 2
        nursery.cancel_scope.cancel()


async def _hold_forever(stream: trio.SocketStream) -> None:
    """A server that accepts and never says a word."""
    await trio.sleep_forever()
