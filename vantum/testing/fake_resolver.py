"""A fake agent resolver webhook (docs/agents.md): what a user's service would run.

It checks every request's ``X-Vantum-Signature`` as the docs tell users to, keeps
the requests, and answers by the number called (``routes``: ``to`` -> JSON answer).
``hang = True`` makes it accept requests and never answer, to drive Vantum's
timeout fallback.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio

from ..agents.resolver import SIGNATURE_HEADER, verify
from ..asgi import read_body, serve_app, serve_lifespan


@attrs.define(eq=False)
class FakeResolver:
    secret: bytes
    routes: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """Called number (``to``) -> the JSON answer; others get ``{"agent": null}``."""
    hang: bool = False
    requests: list[dict[str, Any]] = attrs.Factory(list)
    bad_signatures: int = 0
    answered: int = 0
    url: str = ""

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = await read_body(receive) or b""
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        if not verify(self.secret, body, headers.get(SIGNATURE_HEADER.lower(), ""), time.time()):
            self.bad_signatures += 1
            await _respond(send, 401, {"error": "bad signature"})
            return
        facts = json.loads(body)
        self.requests.append(facts)
        if self.hang:
            await trio.sleep_forever()
        self.answered += 1
        await _respond(send, 200, dict(self.routes.get(facts.get("to") or "", {"agent": None})))


async def _respond(send: Any, status: int, obj: Mapping[str, Any]) -> None:
    body = json.dumps(obj).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@asynccontextmanager
async def serve_fake_resolver(
    secret: bytes, routes: Mapping[str, Mapping[str, Any]] | None = None, *, hang: bool = False
) -> AsyncIterator[FakeResolver]:
    """Run a :class:`FakeResolver` on 127.0.0.1; its ``url`` is set inside the block."""
    fake = FakeResolver(secret, routes or {}, hang)
    async with serve_app(fake.app) as url:
        fake.url = url + "/resolve"
        yield fake


__all__ = ["FakeResolver", "serve_fake_resolver"]
