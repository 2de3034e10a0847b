"""Real ``vantum serve --workers N`` processes for the scale-out tests.

:class:`ServerProcess` starts the CLI as deployed (its own process group of workers
under the supervisor), reads its log, and finds in it the shared URL and each
worker's pid and side port (``/metrics``, ``/health``). Everything is waited for by
reading the log or the sockets, never by sleeping.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager, suppress
from typing import Any

import attrs
import httpx
import trio

from vantum.protocol import events as ev
from vantum.server.auth import issue_token, load_secret
from vantum.testing.raw_ws import RawWebSocket

READY = re.compile(r"worker (\d+) ready \(pid (\d+), /metrics and /health at (http://\S+)\)")


@attrs.define
class Worker:
    index: int
    pid: int
    side_url: str


@attrs.define
class ServerProcess:
    process: trio.Process
    secret: str
    log: list[str] = attrs.Factory(list)
    url: str = ""
    eof: bool = False
    _changed: trio.Event = attrs.Factory(trio.Event)

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    def token(self) -> str:
        return issue_token(
            load_secret(self.secret), subject="test", audience="ws", ttl_s=120, now=time.time()
        )

    async def read_log(self) -> None:
        assert self.process.stderr is not None
        buffer = b""
        async for chunk in self.process.stderr:
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for line in lines:
                self.log.append(line.decode(errors="replace"))
            if lines:
                self._changed.set()
                self._changed = trio.Event()
        self.eof = True
        self._changed.set()

    async def wait_for(self, pattern: str, *, after: int = 0) -> tuple[int, re.Match[str]]:
        """The first log line from index ``after`` on matching ``pattern`` (and its index)."""
        regex = re.compile(pattern)
        seen = after
        while True:
            for i in range(seen, len(self.log)):
                match = regex.search(self.log[i])
                if match is not None:
                    return i, match
            seen = len(self.log)
            if self.eof:
                raise AssertionError(f"server exited before logging {pattern!r}")
            await self._changed.wait()

    async def wait_eof(self) -> None:
        """Until every process writing to the server's stderr (workers too) exited."""
        while not self.eof:
            await self._changed.wait()

    def workers(self, *, after: int = 0) -> dict[int, Worker]:
        """The latest ready line of each worker slot (from log index ``after`` on)."""
        found: dict[int, Worker] = {}
        for line in self.log[after:]:
            match = READY.search(line)
            if match is not None:
                index = int(match.group(1))
                found[index] = Worker(index, int(match.group(2)), match.group(3))
        return found


async def answers(call: RawWebSocket) -> None:
    """The call is alive and served: a text turn gets a complete answer."""
    await call.send_event(ev.TEXT_INPUT, {"text": "are you there"})
    while (await call.receive_event())["eventType"] != ev.RESPONSE_COMPLETE:
        pass


async def calls_on_both(
    server: ServerProcess, stack: AsyncExitStack
) -> dict[int, list[RawWebSocket]]:
    """Open calls one after another (each held, in ``stack``) until each of the two
    workers holds at least one; which worker a connection lands on is the kernel's
    choice (``SO_REUSEPORT`` hashes it), so each worker's /health says.

    The kernel spreads connections evenly: both workers are reached within a few calls
    (40 tries missing one worker would be a 1-in-10^12 chance, i.e. a bug)."""
    workers = server.workers()
    assert sorted(workers) == [0, 1]
    by_worker: dict[int, list[RawWebSocket]] = {0: [], 1: []}
    for _ in range(40):
        before = await worker_sessions(server)
        call = await stack.enter_async_context(
            RawWebSocket.connect(server.ws_url, token=server.token())
        )
        await call.read_ack()  # registered in its worker before the ACK is sent
        now = await worker_sessions(server)
        (grew,) = [i for i in now if now[i] > before[i]]
        by_worker[grew].append(call)
        if by_worker[0] and by_worker[1]:
            return by_worker
    raise AssertionError(f"40 calls did not reach both workers: {await worker_sessions(server)}")


async def worker_sessions(server: ServerProcess) -> dict[int, int]:
    """Calls each worker holds now, from its own /health."""
    return {i: (await health(w.side_url))["sessions"] for i, w in server.workers().items()}


async def health(side_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.get(f"{side_url}/health")
    body: dict[str, Any] = response.json()
    body["http_status"] = response.status_code
    return body


async def metrics_text(side_url: str) -> str:
    async with httpx.AsyncClient() as client:
        return (await client.get(f"{side_url}/metrics")).text


@asynccontextmanager
async def serve_process(
    env: dict[str, str], secret: str, *, workers: int = 2, wait_listening: bool = True
) -> AsyncIterator[ServerProcess]:
    """``vantum serve --workers N`` on a free loopback port, until the block ends
    (then SIGKILL to the supervisor's whole group if it is still running)."""
    full_env = {
        **os.environ,
        "VANTUM_HOST": "127.0.0.1",
        "VANTUM_PORT": "0",
        "VANTUM_WORKER_METRICS_PORT": "0",
        "VANTUM_AUTH_SECRET": secret,
        "VANTUM_LOG_LEVEL": "INFO",
        **env,
    }
    command = [sys.executable, "-c", "import sys; from vantum.cli import main; sys.exit(main())"]
    process = await trio.lowlevel.open_process(
        [*command, "serve", "--workers", str(workers)],
        env=full_env,
        stderr=subprocess.PIPE,
    )
    server = ServerProcess(process, secret)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.read_log)
            if wait_listening:
                with trio.fail_after(60):
                    _, match = await server.wait_for(r"Vantum listening on (http://\S+)")
                server.url = match.group(1)
            yield server
            nursery.cancel_scope.cancel()
    finally:
        pids = [w.pid for w in server.workers().values()]
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        for pid in pids:  # workers drain when the supervisor dies; make sure
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print("\n".join(server.log[-40:]))
