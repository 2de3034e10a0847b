"""The ASGI application: routes, session registry, graceful drain.

Routes: ``/ws`` (browser protocol), ``/health``, ``/metrics`` and the browser page
``/``. Each WebSocket connection runs one session in its own cancel scope, so a
crash or a shutdown of one call never touches another.
"""

from __future__ import annotations

import contextlib
import json
import logging
from importlib import resources
from typing import Any

import trio

from ..asgi import serve_lifespan
from ..config import Config
from ..pipeline.context import DEFAULT_SYSTEM_PROMPT
from ..pipeline.messages import ServerEvent
from ..pipeline.session import Engines, EventObserver, SessionOptions, run_session
from ..pipeline.transport import Transport
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..records import CallStore, record_call
from ..transports.browser import ASGIReceive, ASGISend, BrowserTransport
from .metrics import ServerMetrics

log = logging.getLogger("vantum.server")


class VantumApp:
    def __init__(
        self,
        config: Config,
        engines: Engines,
        options: SessionOptions | None = None,
        engine_names: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.engines = engines
        self.options = options or SessionOptions(
            system_prompt=config.system_prompt or DEFAULT_SYSTEM_PROMPT,
            playback_lead=config.playback_lead_ms / 1000.0,
            output_chunk_ms=config.output_chunk_ms,
            request_queue=config.request_queue,
            audio_rate_margin=config.audio_rate_margin,
        )
        self.engine_names = engine_names or {}
        self.metrics = ServerMetrics()
        self.sessions: dict[str, trio.CancelScope] = {}
        self.store: CallStore | None = None
        """Call records (set by ``run_server``); None records nothing."""
        self.draining = False
        self._idle = trio.Event()
        self._idle.set()

    async def __call__(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await serve_lifespan(receive, send)
        elif kind == "http":
            if scope["path"].startswith("/twilio/"):
                from ..transports.twilio_http import handle_twilio_http

                await handle_twilio_http(self, scope, receive, send)
            else:
                await self._http(scope, send)
        elif kind == "websocket":
            if scope["path"] == "/ws":
                await self._browser_ws(receive, send)
            elif scope["path"] == "/twilio/stream":
                from ..transports.twilio_ws import serve_twilio_stream

                await serve_twilio_stream(self, scope, receive, send)
            else:
                await receive()
                await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: dict[str, Any], send: ASGISend) -> None:
        path, method = scope["path"], scope["method"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain")
        elif path == "/health":
            body = {
                "status": "draining" if self.draining else "ok",
                "sessions": len(self.sessions),
                "engines": self.engine_names,
            }
            await _respond(
                send, 503 if self.draining else 200, json.dumps(body).encode(), "application/json"
            )
        elif path == "/metrics":
            await _respond(send, 200, self.metrics.render(), "text/plain; version=0.0.4")
        elif path in ("/", "/index.html"):
            await _respond(send, 200, _static("index.html"), "text/html; charset=utf-8")
        elif path.startswith("/static/") and "/" not in path[len("/static/") :]:
            name = path[len("/static/") :]
            try:
                data = _static(name)
            except FileNotFoundError:
                await _respond(send, 404, b"not found\n", "text/plain")
                return
            ctype = "text/javascript" if name.endswith(".js") else "text/css"
            await _respond(send, 200, data, ctype)
        else:
            await _respond(send, 404, b"not found\n", "text/plain")

    async def _browser_ws(self, receive: ASGIReceive, send: ASGISend) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        session_id = new_id()
        transport = BrowserTransport(session_id, receive, send, self.config.max_frame_bytes)
        refusal = self.refusal()
        if refusal is not None:
            reason, code, message = refusal
            self.metrics.sessions_refused.labels(reason).inc()
            await transport.send(ServerEvent(reason, {"message": message}, request_type="connect"))
            await transport.close(code, message)
            return
        await self.serve_session(transport, "browser")

    def refusal(self) -> tuple[str, int, str] | None:
        """Why a new call must be turned away (event type, close code, message), or None."""
        if self.draining:
            return ev.ERR_SHUTDOWN, ev.CLOSE_GOING_AWAY, "server is shutting down"
        if len(self.sessions) >= self.config.max_sessions:
            return (
                "connection.error.capacity",
                ev.CLOSE_TRY_AGAIN,
                f"server at capacity ({self.config.max_sessions} sessions); try again later",
            )
        return None

    async def serve_session(self, transport: Transport, kind: str) -> None:
        """Run one call on ``transport`` until it ends; every carrier comes through here."""
        sid = transport.session_id
        code, reason = ev.CLOSE_NORMAL, "session ended"
        self.metrics.sessions_total.labels(kind).inc()
        self.metrics.sessions_active.inc()
        with trio.CancelScope() as scope:
            self.sessions[sid] = scope
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            try:
                async with contextlib.AsyncExitStack() as stack:
                    observer: EventObserver = self.metrics
                    if self.store is not None:
                        observer = await stack.enter_async_context(
                            record_call(self.store, sid, transport=kind, also=self.metrics)
                        )
                    await run_session(
                        transport, self.engines, self.options, observer, meter=self.metrics
                    )
            except Exception:
                log.exception("session %s crashed", sid)
                code, reason = ev.CLOSE_INTERNAL, "internal error"
            finally:
                del self.sessions[sid]
                self.metrics.sessions_active.dec()
                if not self.sessions:
                    self._idle.set()
        if scope.cancelled_caught:
            code, reason = ev.CLOSE_GOING_AWAY, "server is shutting down"
        with trio.CancelScope(shield=True):
            with trio.move_on_after(2):
                await transport.close(code, reason)

    async def wait_idle(self) -> None:
        """Return once no session is open (tests and the drain use it)."""
        await self._idle.wait()

    async def drain(self, timeout: float) -> None:
        """Refuse new calls, give open ones ``timeout`` s to end, then close them (1001)."""
        self.draining = True
        log.info("draining %d session(s), up to %.1f s", len(self.sessions), timeout)
        with trio.move_on_after(timeout):
            await self._idle.wait()
        for scope in list(self.sessions.values()):
            scope.cancel()
        with trio.move_on_after(5):
            await self._idle.wait()


async def _respond(send: ASGISend, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
                (b"cache-control", b"no-store"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _static(name: str) -> bytes:
    return resources.files("vantum.server").joinpath("static", name).read_bytes()
