"""The ASGI application: routes and HTTP responses; every call goes through it.

Routes: ``/ws`` (browser protocol), ``/voicechat/ws`` (the same calls in the
original TypeScript Vantum's ``voicechat`` dialect), ``/health``, ``/metrics``, the browser page
``/`` and the Twilio endpoints. Who may open ``/ws`` is decided in ``admission``;
the open calls, their cancel scopes and the graceful drain live in ``registry``.
Each WebSocket connection runs one session in its own cancel scope, so a crash or
a shutdown of one call never touches another.
"""

from __future__ import annotations

import contextlib
import json
import logging
import secrets
from importlib import resources
from typing import Any

import attrs
import trio

from ..asgi import serve_lifespan
from ..config import Config
from ..logs import bind
from ..pipeline.context import DEFAULT_SYSTEM_PROMPT
from ..pipeline.events import ErrorEvent
from ..pipeline.session import Engines, EventObserver, run_session
from ..pipeline.settings import CallSettings
from ..pipeline.transport import Transport
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..protocol.twilio import StreamTickets, derive_key
from ..providers.reporting import reporting_to
from ..records import CallStore, record_call
from ..records.recorder import CallRecorder
from ..transports.asgi_ws import ConnectionControl, current_connection
from ..transports.browser import ASGIReceive, ASGISend, BrowserTransport
from ..transports.voicechat import VoicechatTransport
from .admission import AdmissionControl, HandshakeRefused, client_ip, rate_refusal
from .auth import AuthError
from .cluster import CallRegistry, LocalCalls
from .connections import CLOSE_GRACE_S
from .metrics import ServerMetrics
from .registry import SessionRegistry
from .tracing import Tracing

log = logging.getLogger("vantum.server")


class VantumApp:
    def __init__(
        self,
        config: Config,
        engines: Engines,
        settings: CallSettings | None = None,
        engine_names: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        self.engines = engines
        self.settings = settings or CallSettings(
            system_prompt=config.system_prompt or DEFAULT_SYSTEM_PROMPT,
            playback_lead=config.playback_lead_ms / 1000.0,
            output_chunk_ms=config.output_chunk_ms,
            request_queue=config.request_queue,
            audio_rate_margin=config.audio_rate_margin,
            max_call_s=config.max_call_s,
        )
        self.engine_names = engine_names or {}
        self.metrics = ServerMetrics()
        self.admission = AdmissionControl(config, self.metrics)
        self.registry = SessionRegistry(config.max_sessions)
        self.calls: CallRegistry = LocalCalls(self.hangup_here)
        """The cluster's view of calls (``cluster.py``): this process alone, or Redis
        (set by ``run_worker`` with ``VANTUM_REDIS_URL``)."""
        self._hung_up: set[str] = set()
        secret = self.admission.auth_secret
        self.stream_tickets = StreamTickets(
            derive_key(secret) if secret is not None else secrets.token_bytes(32)
        )
        """One-time tickets tying each ``/twilio/stream`` to a call ``/twilio/voice``
        answered. Keyed by the auth secret, so every process sharing it honours them;
        without one (the dev flag) by a key of this process only."""
        self.store: CallStore | None = None
        """Call records (set by ``run_server``); None records nothing."""
        self.tracing: Tracing | None = None
        """Turn spans (set by ``run_server`` when VANTUM_OTEL / an OTLP endpoint asks)."""

    @property
    def voicechat_settings(self) -> CallSettings:
        """A ``/voicechat/ws`` call's settings at admission: the server's, without idle
        prompts or idle hang-up unless ``VANTUM_VOICECHAT_IDLE_PROMPTS`` asks for them."""
        if self.config.voicechat_idle_prompts:
            return self.settings
        return attrs.evolve(
            self.settings, turn=attrs.evolve(self.settings.turn, idle_prompt_s=None)
        )

    @property
    def auth_secret(self) -> bytes | None:
        """The ``/ws`` token secret; None only with the explicit dev flag."""
        return self.admission.auth_secret

    @property
    def sessions(self) -> dict[str, trio.CancelScope]:
        """The open calls by session id (the registry's own dict: read, do not change)."""
        return self.registry.sessions

    @property
    def draining(self) -> bool:
        """True once a drain has begun: new calls are refused, ``/health`` says 503."""
        return self.registry.draining

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
            elif scope["path"] == "/voicechat/ws":
                await self._browser_ws(scope, receive, send, voicechat=True)
            elif scope["path"] == "/twilio/stream":
                await self._twilio_ws(scope, receive, send)
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
        self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend, voicechat: bool = False
    ) -> None:
        """``/ws``, or ``/voicechat/ws`` with ``voicechat``: the same admission, limits
        and session; only the dialect spoken at the edge and the idle policy differ."""
        connect = await receive()
        if connect["type"] != "websocket.connect":
            return
        admitted = await self._admit(scope, send)
        if admitted is None:
            return
        accept, failure = admitted
        await send(accept)
        session_id = new_id()
        dialect = VoicechatTransport if voicechat else BrowserTransport
        transport = dialect(session_id, receive, send, self.config.max_frame_bytes)
        if failure is not None:
            reason = failure.reason.value
            await transport.send(ErrorEvent(ev.ERR_AUTH, failure.message, "connect", reason))
            await transport.close(ev.CLOSE_POLICY, failure.message)
            return
        refusal = self.refusal()
        if refusal is not None:
            kind, code, message = refusal
            self.metrics.sessions_refused.labels(kind).inc()
            await transport.send(ErrorEvent(kind, message, "connect"))
            await transport.close(code, message)
            return
        if voicechat:
            await self.serve_session(transport, "voicechat", self.voicechat_settings)
        else:
            await self.serve_session(transport, "browser")

    async def _twilio_ws(self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend) -> None:
        refused = self.admission.check_twilio_stream(scope)
        if refused is None and not await self.calls.allow_connect(client_ip(scope), "twilio"):
            self.metrics.sessions_refused.labels("twilio_rate_limited").inc()
            refused = rate_refusal(self.config.twilio_connect_rate_per_s)
        if refused is None:
            from ..transports.twilio_ws import serve_twilio_stream

            await serve_twilio_stream(self, scope, receive, send)
        elif (await receive())["type"] == "websocket.connect":
            await _refuse_handshake(
                scope, send, refused.status, refused.message, refused.retry_after
            )

    async def _admit(
        self, scope: dict[str, Any], send: ASGISend
    ) -> tuple[dict[str, Any], AuthError | None] | None:
        """The accept message for a ``/ws`` handshake and the token's failure if any, or
        None once the handshake has been refused (the rules: ``admission``)."""
        decision = self.admission.check(scope)
        if not isinstance(decision, HandshakeRefused) and not await self.calls.allow_connect(
            client_ip(scope), "ws"
        ):
            self.metrics.sessions_refused.labels("rate_limited").inc()
            decision = rate_refusal(self.config.connect_rate_per_s)
        if isinstance(decision, HandshakeRefused):
            await _refuse_handshake(
                scope, send, decision.status, decision.message, decision.retry_after
            )
            return None
        accept: dict[str, Any] = {"type": "websocket.accept"}
        if decision.subprotocol is not None:
            accept["subprotocol"] = decision.subprotocol
        return accept, decision.token_failure

    def refusal(self) -> tuple[str, int, str] | None:
        """Why a new call must be turned away (event type, close code, message), or None."""
        return self.registry.refusal()

    async def serve_session(
        self, transport: Transport, kind: str, settings: CallSettings | None = None
    ) -> None:
        """Run one call on ``transport`` until it ends; every carrier comes through here.

        ``settings``: the call's settings at admission (default: the server's)."""
        sid = transport.session_id
        # Every actor's log records carry the ids; provider failures reach the metrics.
        with bind(session_id=sid, transport=kind), reporting_to(self.metrics):
            await self._serve_session(transport, sid, kind, settings or self.settings)

    async def _serve_session(
        self, transport: Transport, sid: str, kind: str, settings: CallSettings
    ) -> None:
        if await self.calls.claim(sid) is not None:  # the cluster is full (or Redis down)
            message = "the service is at capacity; try again later"
            self.metrics.sessions_refused.labels(ev.ERR_CAPACITY).inc()
            with trio.move_on_after(2):
                await transport.send(ErrorEvent(ev.ERR_CAPACITY, message, "connect"))
                await transport.close(ev.CLOSE_TRY_AGAIN, message)
            return
        try:
            await self._serve_claimed(transport, sid, kind, settings)
        finally:
            await self.calls.release(sid)
            self._hung_up.discard(sid)

    async def _serve_claimed(
        self, transport: Transport, sid: str, kind: str, settings: CallSettings
    ) -> None:
        code, reason = ev.CLOSE_NORMAL, "session ended"
        self.metrics.sessions_total.labels(kind).inc()
        self.metrics.sessions_active.inc()
        connection = current_connection.get()
        if connection is not None and settings.max_call_s:
            # The call ends at its limit even if a write to the peer is stuck.
            limit = settings.max_call_s + CLOSE_GRACE_S
            connection.cut_at(trio.current_time() + limit, "max_duration")
        with self.registry.open(sid) as scope:
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
                            transport, self.engines, settings, observer, meter=self.metrics
                        )
                    finally:
                        self._count_cut(connection, recorder)
            except Exception:
                log.exception("session %s crashed", sid)
                code, reason = ev.CLOSE_INTERNAL, "internal error"
            finally:
                self.metrics.sessions_active.dec()
        if scope.cancelled_caught and sid in self._hung_up:
            code, reason = ev.CLOSE_NORMAL, "hung up"
        elif scope.cancelled_caught:
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

    def hangup_here(self, sid: str) -> bool:
        """End call ``sid`` if this process holds it (close 1000, "hung up"); how a
        cluster hang-up is delivered. A placeholder for the calls API's own hang-up,
        which says goodbye first: plug that in here."""
        scope = self.registry.sessions.get(sid)
        if scope is None:
            return False
        self._hung_up.add(sid)
        scope.cancel()
        return True

    async def wait_idle(self) -> None:
        """Return once no session is open (tests and the drain use it)."""
        await self.registry.wait_idle()

    async def wait_open(self, count: int = 1) -> None:
        """Return once at least ``count`` sessions are open."""
        await self.registry.wait_open(count)

    async def drain(self, timeout: float) -> None:
        """Refuse new calls, give open ones ``timeout`` s to end, then close them (1001)."""
        await self.registry.drain(timeout)


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
