"""``vantum serve --workers N``: N trio worker processes on one port.

Why processes: one trio process uses one core (the replay benchmark: ~30 browser
calls per core), and a call's actors share nothing across calls, so the cheapest way
to use every core is to run independent servers side by side.

How they share the port: ``SO_REUSEPORT``. Each worker binds and listens on its own
socket on the same port, and the Linux kernel hashes each new connection (its
address and port pair) onto one listener of the group, so calls spread across the
workers whatever their load. The first design had every worker accept from one
inherited socket; then the worker woken first took nearly every connection (40 of 40
back-to-back calls, 21 of 21 concurrent pairs on worker 0, issue 19): accept
wake-ups favour the worker that is already running. With ``SO_REUSEPORT`` the same
40 calls split about evenly (docs/deploy.md has the measured counts).

What the group costs, and how it is handled (docs/deploy.md, "How the port is shared"):

- a listener that closes takes the connections still queued on it with it (Linux
  resets them, unless ``net.ipv4.tcp_migrate_req`` is 1). A *draining* worker
  therefore first accepts whatever is queued on its socket (those callers get the
  drain's clean refusal, ``connection.error.shutdown`` and close 1001) and then closes
  it, so the kernel sends every later connection to the workers still serving; a
  *crashed* worker's queue (connections the kernel completed in the instant before
  it died) is reset with it, and while it restarts its share goes to the others;
- the supervisor keeps the port: it binds a socket with ``SO_REUSEPORT`` and never
  listens on it, so the number stays ours while workers come and go (and port 0, in
  tests, resolves once for all of them) but no connection is ever queued there.

The supervisor is small on purpose: it owns the port and the worker processes,
nothing of the calls. It

- starts each worker (``python -m vantum.server.worker``) with the port, its index
  and the server's :class:`~vantum.config.Config` (pickled on stdin: it holds the auth
  secret, which stays out of argv and the environment), and waits for its ``ready``
  line on stdout; that stdin pipe then stays open, and its end tells a worker its
  supervisor died (it drains);
- restarts a worker that exits while the server is not stopping, counting it
  (``vantum_worker_restarts`` on the new worker's ``/metrics``, and the log), with a
  back-off if it dies young, so a worker that cannot start does not spin a core;
- on SIGTERM/SIGINT sends SIGTERM to every worker, each drains its own calls
  (``VANTUM_GRACEFUL_TIMEOUT``), and kills any still alive after that plus a margin.

A crashed worker's calls end with it (the kernel closes its sockets); the other
workers' calls never notice. Each worker serves ``/metrics`` and ``/health`` for
itself on its own port (``VANTUM_WORKER_METRICS_PORT`` + index): the shared port
reaches whichever worker the kernel picks, so it cannot give one view of a process.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
from collections.abc import Callable

import attrs
import trio

from ..config import Config
from .connections import CLOSE_GRACE_S
from .seat import reuseport_socket

log = logging.getLogger("vantum.server")

STOP_MARGIN_S = 5.0
"""After the drain's own deadline, how long a worker has to exit before it is killed."""
YOUNG_S = 5.0
"""A worker that exits sooner than this after it started is restarted after a back-off."""
MAX_BACKOFF_S = 30.0


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_workers(config: Config) -> tuple[int, str]:
    """How many workers ``vantum serve`` runs, and why (for the start-up log).

    ``--workers`` / ``VANTUM_WORKERS`` decide when given. Otherwise one per usable core
    only when every stage runs on a cloud provider: the embedded engines load their
    models into each process (pocketsphinx's acoustic model, a local LLM), so a worker
    per core would multiply that memory on a developer's machine for calls it does
    not have. README's first command (no keys) therefore stays one process.
    """
    if config.workers > 0:
        return config.workers, "VANTUM_WORKERS/--workers"
    cloud = config.deepgram_api_key and config.openai_api_key and config.cartesia_api_key
    if cloud:
        return usable_cores(), "one per usable core (every stage on a cloud provider)"
    return 1, (
        "embedded engines load their models into every process; set --workers N "
        "(VANTUM_WORKERS) to run more"
    )


def reserve_port(host: str, port: int) -> socket.socket:
    """The supervisor's hold on the port: bound into the ``SO_REUSEPORT`` group, never
    listening, so it is never picked for a connection.

    Binding here first also fails early and clearly when the port is taken, and
    resolves port 0 to the one number every worker then binds. The port refuses
    connections until the first worker listens, as a single process's does, instead
    of queueing them while the workers load."""
    return reuseport_socket(host, port)


@attrs.define
class WorkerSlot:
    """One worker position: the process in it now, and how often it was restarted."""

    index: int
    process: trio.Process | None = None
    restarts: int = 0
    metrics_url: str = ""


@attrs.define
class Supervisor:
    config: Config
    count: int
    port: int
    """The port every worker binds (``SO_REUSEPORT``); the supervisor reserves it."""
    slots: list[WorkerSlot] = attrs.field(init=False)
    stopping: bool = False
    on_ready: Callable[[WorkerSlot], None] | None = None
    """Called each time a worker (first start or restart) reports ready."""

    def __attrs_post_init__(self) -> None:
        self.slots = [WorkerSlot(i) for i in range(self.count)]

    def metrics_port(self, index: int) -> int:
        base = self.config.worker_metrics_port
        if base is None:
            base = self.config.port + 1 if self.config.port else 0
        return base + index if base else 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep every slot filled until :meth:`stop`; started once all are ready (they
        start side by side: a worker's imports and engines take seconds)."""
        waiting = len(self.slots)
        all_ready = trio.Event()

        def one_ready() -> None:
            nonlocal waiting
            waiting -= 1
            if waiting == 0:
                all_ready.set()

        async with trio.open_nursery() as nursery:
            for slot in self.slots:
                nursery.start_soon(self._keep, slot, one_ready)
            await all_ready.wait()
            task_status.started()

    async def stop(self) -> None:
        """SIGTERM every worker (each drains its calls), then kill those still alive."""
        self.stopping = True
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                slot.process.send_signal(signal.SIGTERM)
        limit = self.config.graceful_timeout + CLOSE_GRACE_S + STOP_MARGIN_S
        with trio.move_on_after(limit):
            for slot in self.slots:
                if slot.process is not None:
                    await slot.process.wait()
        for slot in self.slots:
            if slot.process is not None and slot.process.returncode is None:
                log.error("worker %d did not exit within %.1f s: killed", slot.index, limit)
                slot.process.kill()
                await slot.process.wait()

    async def _keep(self, slot: WorkerSlot, first_ready: Callable[[], None]) -> None:
        started = False
        backoff = 0.5
        while not self.stopping:
            born = trio.current_time()
            process = await self._spawn(slot)
            slot.process = process
            try:
                ready = await self._await_ready(slot, process)
                if ready and not started:
                    started = True
                    first_ready()
                code = await process.wait()
            finally:
                if process.returncode is None:  # cancelled: the supervisor is failing
                    process.kill()
                if process.stdin is not None:
                    await process.stdin.aclose()
            if self.stopping:
                return
            if not started:
                raise WorkerFailed(
                    f"worker {slot.index} exited with {_describe_exit(code)} before it was "
                    "ready (its log says why)"
                )
            slot.restarts += 1
            log.error(
                "worker %d (pid %d) exited with %s; restarting it (%d restart(s) of this worker)",
                slot.index,
                process.pid,
                _describe_exit(code),
                slot.restarts,
            )
            if trio.current_time() - born < YOUNG_S:
                await trio.sleep(backoff)  # a crash loop must not spin a core
                backoff = min(backoff * 2, MAX_BACKOFF_S)
            else:
                backoff = 0.5

    async def _spawn(self, slot: WorkerSlot) -> trio.Process:
        command = [
            sys.executable,
            "-m",
            "vantum.server.worker",
            str(self.port),
            str(slot.index),
            str(slot.restarts),
            str(self.metrics_port(slot.index)),
        ]
        process = await trio.lowlevel.open_process(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # Its own process group: a terminal's Ctrl-C reaches the supervisor only,
            # which then stops every worker in order.
            start_new_session=True,
        )
        assert process.stdin is not None
        # The pipe stays open: the worker takes its closing as the supervisor's death.
        await process.stdin.send_all(pickle.dumps(self.config))
        return process

    async def _await_ready(self, slot: WorkerSlot, process: trio.Process) -> bool:
        """Read the worker's ``ready <metrics url>`` line; False if it exited first."""
        assert process.stdout is not None
        buffer = b""
        async for chunk in process.stdout:
            buffer += chunk
            if b"\n" in buffer:
                line = buffer.split(b"\n", 1)[0].decode()
                if line.startswith("ready "):
                    slot.metrics_url = line.split(" ", 1)[1]
                    log.info(
                        "worker %d ready (pid %d, /metrics and /health at %s)",
                        slot.index,
                        process.pid,
                        slot.metrics_url,
                    )
                    if self.on_ready is not None:
                        self.on_ready(slot)
                    return True
                return False
        return False


class WorkerFailed(RuntimeError):
    """A worker could not start at all: the server refuses to run half-configured."""


def _describe_exit(code: int) -> str:
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


async def supervise(config: Config, count: int, *, announce: Callable[[str], None]) -> None:
    """Run ``count`` workers on ``config.host:config.port`` until SIGTERM/SIGINT.

    The signals are caught from the start: a SIGTERM while the workers still load
    stops them in order too."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        sock = reserve_port(config.host, config.port)
        host, port = sock.getsockname()[:2]
        url = f"http://{f'[{host}]' if ':' in host else host}:{port}"
        supervisor = Supervisor(config, count, port)
        try:
            async with trio.open_nursery() as nursery:

                async def run_and_announce() -> None:
                    await nursery.start(supervisor.run)
                    announce(url)

                nursery.start_soon(run_and_announce)
                async for signum in signals:
                    log.info("received %s, stopping every worker", signal.Signals(signum).name)
                    break
                await supervisor.stop()
                nursery.cancel_scope.cancel()
        finally:
            sock.close()
    log.info("all workers stopped")
