"""``vantum serve``: build the engines, say which serves each stage, serve."""

from __future__ import annotations

import contextlib
import logging
import time

import trio

from ..config import Config
from ..records import open_store
from .app import VantumApp
from .engines import build_engines
from .run import serve

log = logging.getLogger("vantum")


async def run_server(config: Config) -> None:
    engines, names = build_engines(config)
    for stage, name in names.items():
        log.info("%s engine: %s", stage.upper(), name)
    app = VantumApp(config, engines, engine_names=names)
    async with contextlib.AsyncExitStack() as stack:
        if config.records_url:
            app.store = await stack.enter_async_context(open_store(config.records_url))
            if not config.records_url.startswith("postgres"):
                await app.store.close_orphans(at=time.time())
            log.info("call records: %s", config.records_url)
        await _serve(app, config)


async def _serve(app: VantumApp, config: Config) -> None:
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, app, config)
        log.info(
            "Vantum listening on %s (WebSocket %s/ws, page %s/)",
            url,
            url.replace("http", "ws"),
            url,
        )
