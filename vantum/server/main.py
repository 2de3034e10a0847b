"""``vantum serve``: build the engines, say which serves each stage, serve."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from ..config import Config
from ..records import open_store
from . import local_secret
from .app import VantumApp
from .auth import WS_AUDIENCE, issue_token, load_secret
from .engines import build_engines
from .redis_calls import open_redis_calls
from .run import serve, serve_side_port
from .tracing import Tracing, make_tracer
from .worker import WorkerSeat, metrics_only
from .workers import default_workers, supervise

log = logging.getLogger("vantum")


PAGE_TOKEN_TTL_S = 4 * 3600
"""Lifetime of the token in the page URL logged at start-up (a development aid), at most
``VANTUM_TOKEN_MAX_TTL_S``."""


async def run_server(config: Config) -> None:
    """``vantum serve``: one process, or a supervisor of ``--workers N`` processes."""
    config = resolve_secret(config)
    count, why = default_workers(config)
    if count > 1:
        log.info("%d workers (%s)", count, why)
        await _close_orphans_once(config)
        await supervise(
            config, count, announce=lambda url: _announce(url, config, f" ({count} workers)")
        )
        return
    if config.workers == 0:
        log.info("1 worker (%s)", why)
    await run_worker(config)


def resolve_secret(config: Config) -> Config:
    """The config with its ``/ws`` secret (the local file's if none is set): resolved
    once, before any worker starts, so every worker signs and checks with the same."""
    if config.insecure_no_auth:
        log.warning("/ws authentication is OFF (--insecure-no-auth): anyone can place calls")
    elif not config.auth_secret:
        secret = local_secret.read_or_create(config.auth_secret_file, create=True)
        config = attrs.evolve(config, auth_secret=secret)
        log.info("/ws tokens are signed with the secret in %s", config.auth_secret_file)
    return config


async def _close_orphans_once(config: Config) -> None:
    """SQLite records left open by a previous run are closed by the supervisor, before
    any worker runs: a worker doing it would close its siblings' live calls."""
    if config.records_url and not config.records_url.startswith("postgres"):
        async with open_store(config.records_url) as store:
            await store.close_orphans(at=time.time())


async def run_worker(config: Config, seat: WorkerSeat | None = None) -> None:
    """Serve on ``config.host:config.port`` (one process), or as worker ``seat`` on the
    supervisor's socket, with its own ``/metrics`` and ``/health`` port."""
    engines, names = build_engines(config)
    for stage, name in names.items():
        log.info("%s engine: %s", stage.upper(), name)
    app = VantumApp(config, engines, engine_names=names)
    async with contextlib.AsyncExitStack() as stack:
        if config.records_url:
            app.store = await stack.enter_async_context(open_store(config.records_url))
            if seat is None and not config.records_url.startswith("postgres"):
                await app.store.close_orphans(at=time.time())
            log.info("call records: %s", config.records_url)
        if config.redis_url:
            app.calls = await stack.enter_async_context(
                open_redis_calls(
                    config,
                    app.metrics,
                    deliver=app.hangup_here,
                    local_calls=lambda: list(app.sessions),
                    draining=lambda: app.draining,
                )
            )
            log.info("cluster state in Redis: %s", _redact(config.redis_url))
        app.tracing = make_tracer()
        if app.tracing is not None:
            stack.push_async_callback(_flush_traces, app.tracing)
        if seat is None:
            await _serve(app, config)
        else:
            await _serve_seat(app, config, seat)


async def _flush_traces(tracing: Tracing) -> None:
    """Export the spans still queued; the SDK's shutdown blocks, so off the trio thread."""
    with trio.CancelScope(shield=True):
        await trio.to_thread.run_sync(tracing.shutdown)


async def _serve(app: VantumApp, config: Config) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, app, config)
        _announce(url, config)


async def _serve_seat(app: VantumApp, config: Config, seat: WorkerSeat) -> None:
    app.metrics.worker_restarts.labels(str(seat.index)).inc(seat.restarts)
    async with trio.open_nursery() as side:
        side_url = await side.start(
            serve_side_port, metrics_only(app), config, f"{config.host}:{seat.metrics_port}"
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(serve, app, config, bind=f"fd://{seat.fd}", shutdown_trigger=seat.stop.wait)
            )
            seat.ready(side_url)
        side.cancel_scope.cancel()


def _redact(url: str) -> str:
    """A URL for the log, without its password."""
    parts = urlsplit(url)
    if parts.password:
        netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
            f":{parts.port}" if parts.port else ""
        )
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def _announce(url: str, config: Config, suffix: str = "") -> None:
    log.info("Vantum listening on %s (WebSocket %s/ws)%s", url, url.replace("http", "ws"), suffix)
    log.info("talk to it: %s", page_instructions(url, config, now=time.time()))


def page_instructions(url: str, config: Config, *, now: float) -> str:
    """How to open the browser page, as the start-up log says it.

    On a loopback bind the URL carries a fresh ``ws`` token, so a developer can click
    it. On any other bind no token is logged: logs are shipped, kept and read by
    people who may not place calls, and a token there would open ``/ws`` to anyone
    who can reach the port for its whole lifetime. The log says how to mint one.
    """
    if not config.auth_secret:
        return f"open {url}/"
    if not is_loopback(config.host):
        return (
            f"open {url}/?token=<token> with a token from `vantum token --ttl 3600` (run with "
            "this server's VANTUM_AUTH_SECRET, or on this machine); no token is logged "
            f"because {config.host} is not a loopback address"
        )
    token = issue_token(
        load_secret(config.auth_secret),
        subject="page",
        audience=WS_AUDIENCE,  # the page uses it for one thing: opening /ws
        ttl_s=min(PAGE_TOKEN_TTL_S, config.token_max_ttl_s),
        now=now,
        max_ttl_s=config.token_max_ttl_s,
    )
    return f"open {url}/?token={token}"


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` serves this machine only (``127.0.0.0/8``, ``::1``,
    ``localhost``). Wildcards (``0.0.0.0``, ``::``) and other names are not."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
