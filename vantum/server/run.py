"""Running the app under Hypercorn's trio worker, with a graceful drain on signals."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..config import Config
from .app import VantumApp

log = logging.getLogger("vantum.server")


async def wait_for_signal() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("received %s, shutting down", signal.Signals(signum).name)
            return


async def serve(
    app: VantumApp,
    config: Config,
    *,
    shutdown_trigger: Callable[[], Awaitable[None]] = wait_for_signal,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns; reports the bound URL when ready."""
    hc = HypercornConfig()
    hc.bind = [f"{config.host}:{config.port}"]
    # Vantum enforces max_frame_bytes itself (close 1009); Hypercorn's hard cap
    # only bounds the memory one message may take before that check runs.
    hc.websocket_max_message_size = max(64 << 20, 4 * config.max_frame_bytes)
    hc.graceful_timeout = 5.0
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")

    async def trigger() -> None:
        await shutdown_trigger()
        await app.drain(config.graceful_timeout)

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(hypercorn_serve, app, hc, shutdown_trigger=trigger)  # type: ignore[arg-type]
        )
        task_status.started(binds[0])
