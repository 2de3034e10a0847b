"""The ASGI application: routes, session registry, graceful drain.

Routes: ``/ws`` (browser protocol), ``/health``, ``/metrics`` and the browser page
``/``. Each WebSocket connection runs one session in its own cancel scope, so a
crash or a shutdown of one call never touches another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from importlib import resources
from typing import Any

import trio

from ..asgi import serve_lifespan
from ..config import Config
from ..errors import ConfigError
from ..limits import RateLimiter
from ..logs import bind
from ..pipeline.context import DEFAULT_SYSTEM_PROMPT
from ..pipeline.messages import ServerEvent
from ..pipeline.session import Engines, EventObserver, SessionOptions, run_session
from ..pipeline.transport import Transport
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..providers.reporting import reporting_to
from ..records import CallStore, record_call
from ..records.recorder import CallRecorder
from ..transports.asgi_ws import ConnectionControl, current_connection
from ..transports.browser import ASGIReceive, ASGISend, BrowserTransport
from .auth import AuthError, admit, extract_token, load_secret, verify_token
from .connections import CLOSE_GRACE_S
from .metrics import ServerMetrics
from .tracing import Tracing

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
            max_call_s=config.max_call_s,
        )
        self.engine_names = engine_names or {}
        if config.auth_secret:
            self.auth_secret: bytes | None = load_secret(config.auth_secret)
        elif config.insecure_no_auth:
            self.auth_secret = None
        else:
            raise ConfigError(
                "no /ws auth secret: set VANTUM_AUTH_SECRET, or run with --insecure-no-auth "
                "(development only: anyone who can reach the port can place calls)"
            )
        self.connect_limiter = (
            RateLimiter(config.connect_rate_per_s, config.connect_burst)
            if config.connect_rate_per_s > 0
            else None
        )
        self.metrics = ServerMetrics()
        self.sessions: dict[str, trio.CancelScope] = {}
        self.store: CallStore | None = None
        """Call records (set by ``run_server``); None records nothing."""
        self.tracing: Tracing | None = None
        """Turn spans (set by ``run_server`` when VANTUM_OTEL / an OTLP endpoint asks)."""
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
                await self._browser_ws(scope, receive, send)
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

    async def _browser_ws(
        self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
    ) -> None:
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        admitted = await self._admit(scope, send)
        if admitted is None:
            return
        accept, failure = admitted
        await send(accept)
        session_id = new_id()
        transport = BrowserTransport(session_id, receive, send, self.config.max_frame_bytes)
        if failure is not None:
            payload = {"message": failure.message, "reason": failure.reason.value}
            await transport.send(ServerEvent(ev.ERR_AUTH, payload, request_type="connect"))
            await transport.close(ev.CLOSE_POLICY, failure.message)
            return
        refusal = self.refusal()
        if refusal is not None:
            reason, code, message = refusal
            self.metrics.sessions_refused.labels(reason).inc()
            await transport.send(ServerEvent(reason, {"message": message}, request_type="connect"))
            await transport.close(code, message)
            return
        await self.serve_session(transport, "browser")

    async def _admit(
        self, scope: dict[str, Any], send: ASGISend
    ) -> tuple[dict[str, Any], AuthError | None] | None:
        """The accept message for a ``/ws`` handshake and the token's failure if any, or
        None once the handshake has been refused.

        A flood from one address and a foreign page are refused during the handshake
        (HTTP 429 / 403: no session, nothing to tell them). A caller with a missing or
        bad token is accepted just long enough to receive ``connection.error.auth`` and
        close code 1008, because a browser cannot read a refused handshake's reason.
        """
        client = scope.get("client")
        ip = client[0] if client else "unknown"
        limiter = self.connect_limiter
        if limiter is not None and not limiter.allow(ip, trio.current_time()):
            self.metrics.sessions_refused.labels("rate_limited").inc()
            retry = math.ceil(1.0 / limiter.rate_per_s)
            await _refuse_handshake(
                scope, send, 429, "too many connections from this address", retry_after=retry
            )
            return None
        now = time.time()
        try:
            admission = admit(
                scope, secret=None, allowed_origins=self.config.allowed_origins, now=now
            )
        except AuthError as exc:
            self.metrics.sessions_refused.labels(f"auth_{exc.reason.value}").inc()
            log.warning("refused /ws from %s: %s", ip, exc.message)
            await _refuse_handshake(scope, send, 403, exc.message)
            return None
        failure: AuthError | None = None
        if self.auth_secret is not None:
            token = extract_token(scope.get("query_string", b""), scope.get("headers") or [])
            try:
                verify_token(self.auth_secret, token, now=now)
            except AuthError as exc:
                self.metrics.sessions_refused.labels(f"auth_{exc.reason.value}").inc()
                log.info("refused /ws from %s: %s", ip, exc.message)
                failure = exc
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if admission.subprotocol is not None:
            accept["subprotocol"] = admission.subprotocol
        return accept, failure

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
        # Every actor's log records carry the ids; provider failures reach the metrics.
        with bind(session_id=sid, transport=kind), reporting_to(self.metrics):
            await self._serve_session(transport, sid, kind)

    async def _serve_session(self, transport: Transport, sid: str, kind: str) -> None:
        code, reason = ev.CLOSE_NORMAL, "session ended"
        self.metrics.sessions_total.labels(kind).inc()
        self.metrics.sessions_active.inc()
        connection = current_connection.get()
        if connection is not None and self.options.max_call_s:
            # The call ends at its limit even if a write to the peer is stuck.
            limit = self.options.max_call_s + CLOSE_GRACE_S
            connection.cut_at(trio.current_time() + limit, "max_duration")
        with trio.CancelScope() as scope:
            self.sessions[sid] = scope
            self._idle = trio.Event() if self._idle.is_set() else self._idle
            try:
                async with contextlib.AsyncExitStack() as stack:
                    observer: EventObserver = self.metrics
                    recorder: CallRecorder | None = None
                    if self.store is not None:
                        recorder = await stack.enter_async_context(
                            record_call(self.store, sid, transport=kind, also=self.metrics)
                        )
                        observer = recorder
                    if self.tracing is not None:
                        observer = self.tracing.observer(sid, kind, also=observer)
                    try:
                        await run_session(
                            transport, self.engines, self.options, observer, meter=self.metrics
                        )
                    finally:
                        self._count_cut(connection, recorder)
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

    def _count_cut(
        self, connection: ConnectionControl | None, recorder: CallRecorder | None
    ) -> None:
        """A session whose connection the server cut says why in metrics and its record."""
        cut = connection.cut_reason if connection is not None else None
        if cut is not None:
            self.metrics.sessions_cut.labels(cut).inc()
            if recorder is not None:
                recorder.outcome = cut

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


async def _refuse_handshake(
    scope: dict[str, Any], send: ASGISend, status: int, message: str, retry_after: int = 0
) -> None:
    """Refuse a WebSocket handshake with an HTTP status and a JSON reason when the
    server supports it (Hypercorn does); otherwise a plain refusal (HTTP 403)."""
    if "websocket.http.response" not in (scope.get("extensions") or {}):
        await send({"type": "websocket.close", "code": ev.CLOSE_POLICY})
        return
    body = json.dumps({"error": message}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after:
        headers.append((b"retry-after", str(retry_after).encode()))
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


def _static(name: str) -> bytes:
    return resources.files("vantum.server").joinpath("static", name).read_bytes()
