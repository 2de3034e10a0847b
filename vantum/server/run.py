"""Running the app under Hypercorn's trio worker, with a graceful drain on signals."""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig

from ..config import Config
from .app import VantumApp
from .connections import CLOSE_GRACE_S, ConnectionTable, GuardLimits, serve_guarded

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
    bind: str | None = None,
    leave_when_draining: bool = False,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` until ``shutdown_trigger`` returns; reports the bound URL when ready.

    ``bind``: Hypercorn's bind string instead of ``config.host:config.port``; a worker
    of ``vantum serve --workers N`` passes ``fd://N``, its own socket in the port's
    ``SO_REUSEPORT`` group.

    ``leave_when_draining`` (a worker in a group): at ``shutdown_trigger``, accept
    what is queued on the listening socket and close it, then drain. The kernel then
    sends new connections to the workers still serving; the few taken from the queue
    get the drain's refusal (``connection.error.shutdown``, close 1001) instead of the
    reset Linux gives a closing listener's queue. A server alone on its port keeps
    accepting through the drain and refuses each new call so, with a reason.

    Every connection runs under ``connections.GuardedStream``: writes have a deadline,
    frames are checked against ``max_frame_bytes`` from their headers, and the drain
    ends every connection by ``graceful_timeout`` + ``CLOSE_GRACE_S`` whatever its peer
    does (docs/hardening.md, "Peers that do not play along").
    """
    hc = _hypercorn_config(config, bind or f"{config.host}:{config.port}")
    limits = GuardLimits(config.write_timeout_ms / 1000.0, config.max_frame_bytes)
    connections = ConnectionTable()

    async def drain() -> None:
        drain_ends = trio.current_time() + config.graceful_timeout
        connections.cut_all_at(drain_ends + CLOSE_GRACE_S, "shutdown")
        await app.drain(config.graceful_timeout)

    async def trigger() -> None:
        await shutdown_trigger()
        await drain()

    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                serve_guarded,
                app,
                hc,
                limits,
                connections,
                shutdown_trigger=drain if leave_when_draining else trigger,
                stop_accepting=shutdown_trigger if leave_when_draining else None,
            )
        )
        task_status.started(binds[0])


async def serve_side_port(
    app: Any,
    config: Config,
    bind: str,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (a small one: a worker's own ``/metrics`` and ``/health``) on
    ``bind`` until cancelled, with the same connection guards as the main port."""
    hc = _hypercorn_config(config, bind)
    limits = GuardLimits(config.write_timeout_ms / 1000.0, config.max_frame_bytes)
    async with trio.open_nursery() as nursery:
        binds: list[str] = await nursery.start(
            partial(
                serve_guarded,
                app,
                hc,
                limits,
                ConnectionTable(),
                shutdown_trigger=trio.sleep_forever,
            )
        )
        task_status.started(binds[0])


def _hypercorn_config(config: Config, bind: str) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [bind]
    # Uncompressed frames over the limit are refused from their headers before this;
    # Hypercorn's cap applies to what a permessage-deflate message inflates to.
    hc.websocket_max_message_size = config.max_frame_bytes
    hc.graceful_timeout = 5.0  # a backstop: the drain has cut every connection by then
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")
    return hc
