"""One worker of ``vantum serve --workers N`` (``python -m vantum.server.worker``).

The supervisor (``workers.py``) starts it with the shared port, its index, how often
its slot was restarted and its metrics port on the command line, and the server's
pickled :class:`~vantum.config.Config` on stdin. It binds its own socket on that port
with ``SO_REUSEPORT`` (the kernel spreads connections over the group) and serves
exactly like a single-process ``vantum serve`` on it (same app, same drain on SIGTERM,
except that a draining worker leaves the group: the port's other workers take its
share of new calls),
plus its own ``/metrics`` and ``/health`` on its metrics port, and writes one line,
``ready <metrics url>``, to stdout once it accepts calls.
"""

from __future__ import annotations

import gc
import logging
import os
import pickle
import sys

import trio

from ..config import Config
from ..errors import VantumError
from ..logs import bind, configure_logging
from .seat import WorkerSeat, reuseport_socket, watch_for_stop

log = logging.getLogger("vantum.server")


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
    port, index, restarts, metrics_port = (int(a) for a in argv)
    # One pickle; the supervisor keeps the pipe open after it (see watch_for_stop).
    config: Config = pickle.load(sys.stdin.buffer)
    configure_logging(config.log_level, config.log_format)
    # Bound now, listening once the app is up: until then the kernel sends this worker
    # nothing. Detached: Hypercorn's socket object (``fd://``) becomes the fd's only
    # owner, so closing it when the worker drains really leaves the group.
    seat = WorkerSeat(reuseport_socket(config.host, port).detach(), index, restarts, metrics_port)
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
