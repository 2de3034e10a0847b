"""One worker of ``vantum serve --workers N`` (``python -m vantum.server.worker``).

The supervisor (``workers.py``) starts it with the listening socket's fd, its index,
how often its slot was restarted and its metrics port on the command line, and the
server's pickled :class:`~vantum.config.Config` on stdin. It serves exactly like a
single-process ``vantum serve`` on that socket (same app, same drain on SIGTERM),
plus its own ``/metrics`` and ``/health`` on its metrics port, and writes one line,
``ready <metrics url>``, to stdout once it accepts calls.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import signal
import sys
from typing import Any

import attrs
import trio

from ..asgi import serve_lifespan
from ..config import Config
from ..errors import VantumError
from ..logs import bind, configure_logging
from ..transports.browser import ASGIReceive, ASGISend

log = logging.getLogger("vantum.server")

SIDE_PATHS = ("/metrics", "/health")


@attrs.define
class WorkerSeat:
    """Where a worker sits: the inherited socket, its index, its metrics port; and
    whether it serves yet and has been told to stop."""

    fd: int
    index: int
    restarts: int
    metrics_port: int
    serving: bool = False
    stop: trio.Event = attrs.Factory(trio.Event)
    """Set at SIGTERM/SIGINT or when the supervisor is gone (:func:`watch_for_stop`)."""

    def ready(self, metrics_url: str) -> None:
        """Tell the supervisor this worker accepts calls (one line on stdout)."""
        self.serving = True
        sys.stdout.write(f"ready {metrics_url}\n")
        sys.stdout.flush()


def metrics_only(app: Any) -> Any:
    """The worker's side port: ``/metrics`` and ``/health`` of this process only.

    Its readiness (``/health``: 503 while draining) and its metrics are per process; the
    shared port reaches whichever worker accepts. Everything else is 404 here, so the
    side port never becomes a second way in for calls."""

    async def side(scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await serve_lifespan(receive, send)
        elif kind == "http" and scope["path"] in SIDE_PATHS:
            await app(scope, receive, send)
        elif kind == "http":
            body = b"not found: this port serves /metrics and /health only\n"
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [
                        (b"content-type", b"text/plain"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
        else:
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    return side


async def watch_for_stop(stop: trio.Event) -> None:
    """Set ``stop`` at SIGTERM/SIGINT, or when the supervisor is gone: its end of our
    stdin closes with it, however it died, so an orphaned worker drains instead of
    serving on unsupervised. Watched from the worker's first moment, so a worker still
    starting (loading engines, reaching Redis) is stopped too. (``PR_SET_PDEATHSIG``
    would not do: it fires when the *thread* that spawned us exits, and trio spawns
    processes from its thread cache.)"""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def orphaned() -> None:
                async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stdin:
                    while await stdin.receive_some(4096):
                        pass
                log.warning("the supervisor is gone: stopping")
                stop.set()

            async def signalled() -> None:
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    stop.set()

            nursery.start_soon(orphaned)
            nursery.start_soon(signalled)
            await stop.wait()
            # Keep the receiver (a second SIGTERM must not kill the drain) until the
            # worker is done and cancels this task.
            await trio.sleep_forever()


async def run_seat(config: Config, seat: WorkerSeat) -> None:
    """Serve as worker ``seat`` until told to stop; stopped while still starting, it
    exits at once: it has no calls to drain, and what holds it up may be a blocking
    call in a thread (a database connect) that no cancellation reaches."""
    from .main import run_worker

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch_for_stop, seat.stop)

        async def abort_startup() -> None:
            await seat.stop.wait()
            if not seat.serving:
                log.warning("stopped before serving: exiting")
                os._exit(0)

        nursery.start_soon(abort_startup)
        await run_worker(config, seat)
        nursery.cancel_scope.cancel()


def main(argv: list[str]) -> int:
    fd, index, restarts, metrics_port = (int(a) for a in argv)
    # One pickle; the supervisor keeps the pipe open after it (see watch_for_stop).
    config: Config = pickle.load(sys.stdin.buffer)
    configure_logging(config.log_level, config.log_format)
    seat = WorkerSeat(fd, index, restarts, metrics_port)
    try:
        with bind(worker=str(index)):
            trio.run(run_seat, config, seat)
    except VantumError as exc:
        print(f"vantum worker {index}: {exc}", file=sys.stderr)
        return 2
    gc.freeze()  # as the CLI: spare the final collection so the drain ends on time
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
