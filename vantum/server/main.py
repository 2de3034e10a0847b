"""``vantum serve``: build the engines, say which serves each stage, serve."""

from __future__ import annotations

import logging

import trio

from ..config import Config
from .app import VantumApp
from .engines import build_engines
from .run import serve

log = logging.getLogger("vantum")


async def run_server(config: Config) -> None:
    engines, names = build_engines(config)
    for stage, name in names.items():
        log.info("%s engine: %s", stage.upper(), name)
    app = VantumApp(config, engines, engine_names=names)
    async with trio.open_nursery() as nursery:
        url = await nursery.start(serve, app, config)
        log.info(
            "Vantum listening on %s (WebSocket %s/ws, page %s/)",
            url,
            url.replace("http", "ws"),
            url,
        )
