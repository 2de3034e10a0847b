"""A worker's seat in ``vantum serve --workers N``: where one worker process sits (its
own listening socket in the port's ``SO_REUSEPORT`` group, its index, its metrics
port) and the pieces of a worker's life that the server's own start-up uses
(``main.run_worker``): its side port's app and the watch for the order to stop. The
process entry is ``worker.py``; why ``SO_REUSEPORT`` is in ``workers.py``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from typing import Any

import attrs
import trio

from ..asgi import serve_lifespan
from ..transports.browser import ASGIReceive, ASGISend

log = logging.getLogger("vantum.server")

SIDE_PATHS = ("/metrics", "/health")


def reuseport_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening yet.

    Every socket of a port's group sets the option before binding (the supervisor's
    reservation and each worker's listener), and the kernel groups only sockets of the
    same user, so another user's process cannot join and take calls."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host.strip("[]"), port))
    except BaseException:
        sock.close()
        raise
    return sock


@attrs.define
class WorkerSeat:
    """Where a worker sits: its own listening socket's fd (from
    :func:`reuseport_socket`), its index, its metrics port; and whether it serves yet
    and has been told to stop."""

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
