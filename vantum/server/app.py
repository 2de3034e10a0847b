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
import time
from collections.abc import AsyncIterator, Mapping
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import attrs
import trio

from ..agent_spec import AgentSpec
from ..agents.loader import AgentBook, AgentsFileError, load_agents
from ..agents.resolver import AgentResolver
from ..agents.selection import (
    AgentChoice,
    AgentRefused,
    CallFacts,
    call_settings,
    check_overrides,
    check_variables,
    requested_agent,
)
from ..agents.template import escape
from ..asgi import serve_lifespan
from ..config import Config
from ..errors import ConfigError
from ..logs import bind
from ..pipeline.context import DEFAULT_SYSTEM_PROMPT
from ..pipeline.events import ErrorEvent
from ..pipeline.s2s_session import run_s2s_session
from ..pipeline.session import Engines, EventObserver, run_session
from ..pipeline.settings import CallSettings
from ..pipeline.transport import Transport
from ..protocol import events as ev
from ..protocol.ids import new_id
from ..protocol.twilio import StreamTickets, derive_key
from ..providers.reporting import reporting_to
from ..recording.tap import CallRecording, RecordingLimits, record_audio
from ..recording.upload import RecordingUploader
from ..records import CallStore, RecordError, record_call
from ..records.payloads import RECORDING_KIND
from ..records.recorder import CallRecorder, OutboxWaker
from ..tools.base import CallControl, ToolEnv
from ..transports.asgi_ws import ConnectionControl, current_connection
from ..transports.browser import ASGIReceive, ASGISend, BrowserTransport
from ..transports.twilio_dial import OutboundDialer
from ..transports.voicechat import VoicechatTransport
from .admission import AdmissionControl, HandshakeRefused, client_ip, rate_refusal
from .auth import AuthError, TokenClaims
from .cluster import CallRegistry, LocalCalls
from .connections import CLOSE_GRACE_S
from .metrics import ServerMetrics
from .registry import SessionRegistry
from .tracing import Tracing

log = logging.getLogger("vantum.server")

HANGUP_OUTCOME = "api_hangup"
"""A call's end reason when ``POST /v1/calls/{id}/hangup`` ended it."""
CARRIER_STATUS_KIND = "carrier.status"
CARRIER_STATUS_FIELDS = (
    "CallStatus",
    "CallDuration",
    "Duration",
    "Timestamp",
    "SequenceNumber",
    "SipResponseCode",
    "AnsweredBy",
    "Direction",
)
"""What a Twilio status callback adds to the record (docs: Twilio's StatusCallback)."""
NEVER_CONNECTED = frozenset({"busy", "no-answer", "failed", "canceled"})


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
        """The server's per-call defaults; each call's agent is applied over them."""
        self.engine_names = engine_names or {}
        self.metrics = ServerMetrics()
        self.agents = agent_book(config)
        """Every agent a call may run (``--agents``); fails start-up if the file is bad."""
        self.resolver: AgentResolver | None = None
        if config.agent_resolver_url and config.agent_resolver_secret:
            failures = self.metrics.agent_resolver_failures
            self.resolver = AgentResolver(
                config.agent_resolver_url,
                config.agent_resolver_secret.encode(),
                config.agent_resolver_timeout_s,
                on_failure=lambda reason: failures.labels(reason).inc(),
            )
        self.admission = AdmissionControl(config, self.metrics)
        self.registry = SessionRegistry(config.max_sessions)
        self.calls: CallRegistry = LocalCalls(self.hangup_here)
        """The cluster's view of calls (``cluster.py``): this process alone, or Redis
        (set by ``run_worker`` with ``VANTUM_REDIS_URL``)."""
        secret = self.admission.auth_secret
        self.stream_tickets = StreamTickets(
            derive_key(secret) if secret is not None else secrets.token_bytes(32)
        )
        """One-time tickets tying each ``/twilio/stream`` to a call ``/twilio/voice``
        answered. Keyed by the auth secret, so every process sharing it honours them;
        without one (the dev flag) by a key of this process only."""
        self.store: CallStore | None = None
        """Call records (set by ``run_server``); None records nothing."""
        self.webhooks: OutboxWaker | None = None
        """The webhook dispatcher (set by ``run_server``), nudged when a record queued
        deliveries; the URLs are ``config.webhook_urls`` (or the call's agent's)."""
        self.uploader: RecordingUploader | None = None
        """Copies finished recordings to S3 (set by ``run_server`` when configured)."""
        self.dialer = OutboundDialer(config, lambda: self.store, amd=lambda: self.calls)
        """Places outbound Twilio calls (rate, cap, records) and hands AMD verdicts to
        their streams; ``POST /v1/calls`` is meant to call ``dialer.dial``."""
        self.tracing: Tracing | None = None
        """Turn spans (set by ``run_server`` when VANTUM_OTEL / an OTLP endpoint asks)."""
        tool_secret = config.tool_secret or config.auth_secret
        self.tool_secret = tool_secret.encode() if tool_secret else secrets.token_bytes(32)
        """Signs HTTP tool requests; without a configured secret, one of this process."""

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
            if scope["path"].startswith("/v1/"):
                from .calls_api import handle_calls_api

                await handle_calls_api(self, scope, receive, send)
            elif scope["path"].startswith("/twilio/"):
                from ..transports.twilio_http import handle_twilio_http

                await handle_twilio_http(self, scope, receive, send)
            elif scope["path"].startswith("/telnyx/"):
                from ..transports.telnyx_http import handle_telnyx_http

                await handle_telnyx_http(self, scope, receive, send)
            else:
                await self._http(scope, send)
        elif kind == "websocket":
            if scope["path"] == "/ws":
                await self._browser_ws(scope, receive, send)
            elif scope["path"] == "/voicechat/ws":
                await self._browser_ws(scope, receive, send, voicechat=True)
            elif scope["path"] == "/twilio/stream":
                await self._twilio_ws(scope, receive, send)
            elif scope["path"] == "/telnyx/stream":
                await self._twilio_ws(scope, receive, send, telnyx=True)
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
        accept, failure, claims = admitted
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
        kind = "voicechat" if voicechat else "browser"
        base = self.voicechat_settings if voicechat else self.settings
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        facts = CallFacts(
            session_id,
            kind,
            caller=claims.subject if claims is not None else None,
            requested_agent=(query.get("agent") or [None])[0],
            claims=claims.agent_claims() if claims is not None else None,
        )
        try:
            settings = await self.call_settings(facts, claims, base)
        except AgentRefused as exc:
            log.warning("refused %s call: %s", kind, exc.message)
            self.metrics.sessions_refused.labels(f"agent_{exc.reason}").inc()
            await transport.send(ErrorEvent(ev.ERR_AGENT, exc.message, "connect", exc.reason))
            await transport.close(ev.CLOSE_POLICY, exc.message)
            return
        await self.serve_session(transport, kind, settings)

    async def call_settings(
        self,
        facts: CallFacts,
        claims: TokenClaims | None = None,
        base: CallSettings | None = None,
        choice: AgentChoice | None = None,
    ) -> CallSettings:
        """The settings of a call about to start: its agent (URL, token, resolver;
        docs/agents.md) applied over ``base`` (the server's). Raises
        :class:`AgentRefused` when the call cannot run the agent it asked for."""
        token = AgentChoice()
        if claims is not None:
            try:
                token = AgentChoice(
                    claims.agent,
                    check_variables(claims.variables, "token"),
                    check_overrides(claims.overrides, "token"),
                )
            except ValueError as exc:
                raise AgentRefused("bad_claims", str(exc)) from None
        agent = requested_agent(self.agents, facts.requested_agent, token)
        choices = [token] if choice is None else [token, choice]
        if self.resolver is not None:
            answer = await self.resolver.resolve(facts)
            if answer is not None and answer.agent is not None:
                chosen = self.agents.get(answer.agent)
                if chosen is None:
                    detail = f"it named unknown agent {answer.agent[:64]!r}"
                    self.resolver.failed(facts, "unknown_agent", detail)
                    answer = None
                else:
                    agent = chosen
            if answer is not None:
                choices.append(answer)
        settings = call_settings(base or self.settings, agent, facts, *choices)
        self.metrics.agent_calls.labels(agent.name).inc()
        return settings

    async def _twilio_ws(
        self, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend, telnyx: bool = False
    ) -> None:
        """A carrier's media stream: ``/twilio/stream``, or ``/telnyx/stream`` with
        ``telnyx`` (the same per-address carrier connection limit)."""
        refused = self.admission.check_twilio_stream(scope)
        if refused is None and not await self.calls.allow_connect(client_ip(scope), "twilio"):
            self.metrics.sessions_refused.labels("twilio_rate_limited").inc()
            refused = rate_refusal(self.config.twilio_connect_rate_per_s)
        if refused is None and telnyx:
            from ..transports.telnyx_ws import serve_telnyx_stream

            await serve_telnyx_stream(self, scope, receive, send)
        elif refused is None:
            from ..transports.twilio_ws import serve_twilio_stream

            await serve_twilio_stream(self, scope, receive, send)
        elif (await receive())["type"] == "websocket.connect":
            await _refuse_handshake(
                scope, send, refused.status, refused.message, refused.retry_after
            )

    async def _admit(
        self, scope: dict[str, Any], send: ASGISend
    ) -> tuple[dict[str, Any], AuthError | None, TokenClaims | None] | None:
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
        return accept, decision.token_failure, decision.claims

    def refusal(self) -> tuple[str, int, str] | None:
        """Why a new call must be turned away (event type, close code, message), or None."""
        return self.registry.refusal()

    async def serve_session(
        self,
        transport: Transport,
        kind: str,
        settings: CallSettings | None = None,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Run one call on ``transport`` until it ends; every carrier comes through here.

        ``settings``: the call's settings at admission (default: the server's);
        ``meta``: what the carrier says about the call (``from``, ``to``, ``call_sid``,
        an outbound call's dial id), kept in its record."""
        sid = transport.session_id
        # Every actor's log records carry the ids; provider failures reach the metrics.
        with bind(session_id=sid, transport=kind), reporting_to(self.metrics):
            await self._serve_session(transport, sid, kind, settings or self.settings, meta)

    async def _serve_session(
        self,
        transport: Transport,
        sid: str,
        kind: str,
        settings: CallSettings,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        if await self.calls.claim(sid) is not None:  # the cluster is full (or Redis down)
            message = "the service is at capacity; try again later"
            self.metrics.sessions_refused.labels(ev.ERR_CAPACITY).inc()
            with trio.move_on_after(2):
                await transport.send(ErrorEvent(ev.ERR_CAPACITY, message, "connect"))
                await transport.close(ev.CLOSE_TRY_AGAIN, message)
            return
        try:
            await self._serve_claimed(transport, sid, kind, settings, meta)
        finally:
            await self.calls.release(sid)

    async def _serve_claimed(
        self,
        transport: Transport,
        sid: str,
        kind: str,
        settings: CallSettings,
        meta: Mapping[str, str] | None,
    ) -> None:
        code, reason = ev.CLOSE_NORMAL, "session ended"
        record_meta = dict(meta or {})
        if settings.agent is not None:
            record_meta["agent"] = settings.agent.name
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
                            record_call(
                                self.store,
                                sid,
                                transport=kind,
                                meta=record_meta or None,
                                also=self.metrics,
                                webhooks=self.webhook_urls(settings),
                                waker=self.webhooks,
                            )
                        )
                        observer = recorder
                    if self.tracing is not None:
                        observer = self.tracing.observer(sid, kind, also=observer)
                    if self.records_audio(settings):
                        recording = await stack.enter_async_context(self._recording(sid))
                        transport = recording.wrap(transport)
                    try:
                        if self.engines.s2s is not None:
                            await run_s2s_session(
                                transport,
                                self.engines.s2s,
                                settings,
                                observer,
                                meter=self.metrics,
                                tool_env=self.tool_env(transport, kind),
                            )
                        else:
                            await run_session(
                                transport,
                                self.engines,
                                settings,
                                observer,
                                meter=self.metrics,
                                tool_env=self.tool_env(transport, kind),
                            )
                    finally:
                        self._count_cut(connection, recorder)
            except Exception:
                log.exception("session %s crashed", sid)
                code, reason = ev.CLOSE_INTERNAL, "internal error"
            finally:
                self.metrics.sessions_active.dec()
                hung_up = self.registry.was_hung_up(sid)
        if scope.cancelled_caught and hung_up:
            code, reason = ev.CLOSE_NORMAL, "call hung up"
        elif scope.cancelled_caught:
            code, reason = ev.CLOSE_GOING_AWAY, "server is shutting down"
        with trio.CancelScope(shield=True):
            with trio.move_on_after(2):
                await transport.close(code, reason)

    def tool_env(self, transport: Transport, kind: str) -> ToolEnv:
        """What a call's tools run with: Twilio calls get REST call control when the
        account is configured (``TWILIO_ACCOUNT_SID``/``TWILIO_AUTH_TOKEN``), Telnyx
        calls Call Control with ``TELNYX_API_KEY``; both are phone calls (``send_dtmf``)."""
        call_id = getattr(transport, "call_id", transport.session_id)
        control: CallControl | None = None
        config = self.config
        try:
            if kind == "twilio" and config.twilio_account_sid and config.twilio_auth_token:
                from ..transports.twilio_control import TwilioCallControl
                from ..transports.twilio_rest import TwilioREST

                control = TwilioCallControl(TwilioREST.from_config(config), call_id)
            elif kind == "telnyx" and config.telnyx_api_key:
                from ..transports.telnyx_control import TelnyxCallControl
                from ..transports.telnyx_rest import TelnyxREST

                control = TelnyxCallControl(TelnyxREST.from_config(config), call_id)
        except ConfigError as exc:
            log.warning("call %s: no call control for tools: %s", call_id, exc)
        return ToolEnv(self.tool_secret, control, call_id, phone=kind in ("twilio", "telnyx"))

    def records_audio(self, settings: CallSettings) -> bool:
        """Whether this call is recorded: the server's ``VANTUM_RECORD_CALLS`` or the
        call's agent's ``record_audio``, and a ``VANTUM_RECORDINGS_DIR`` to put it in."""
        if not self.config.recordings_dir:
            return False
        agent = settings.agent
        return self.config.record_calls or (agent is not None and agent.record_audio)

    @contextlib.asynccontextmanager
    async def _recording(self, sid: str) -> AsyncIterator[CallRecording]:
        """The call's recording; once it is complete, its location goes into the record
        (before the record is ended, so ``call.ended`` carries it)."""
        assert self.config.recordings_dir
        limits = RecordingLimits(self.config.recording_max_mb << 20, self.config.recording_max_s)
        directory = Path(self.config.recordings_dir)
        recording: CallRecording | None = None
        try:
            async with record_audio(sid, directory, limits=limits) as recording:
                yield recording
        finally:
            if recording is not None and recording.rate and recording.failed is None:
                info = recording.info()
                if self.uploader is not None:
                    info["url"] = self.uploader.target.url(sid)  # where it will be
                if self.store is not None:
                    with trio.CancelScope(shield=True), trio.move_on_after(5):
                        try:
                            await self.store.add_event(sid, RECORDING_KIND, info, time.time())
                        except RecordError as exc:
                            log.warning("call %s: recording not noted: %s", sid, exc)
                if self.uploader is not None:
                    self.uploader.submit(sid, recording.path)

    def webhook_urls(self, settings: CallSettings) -> tuple[str, ...]:
        """Where this call's events go: its agent's URLs when it names any, else the
        server's (``VANTUM_WEBHOOK_URL``). Without a secret nothing is sent."""
        if not self.config.webhook_secret:
            return ()
        own = settings.agent.webhook_urls if settings.agent is not None else ()
        return own or self.config.webhook_urls

    async def carrier_status(
        self, call_sid: str, fields: dict[str, str], *, create_missing: bool = True
    ) -> None:
        """A Twilio status callback: added to the call's record (an event, and the
        status and duration in its meta). A call that never reached a stream (busy,
        no answer, failed, canceled) gets a record of its own, ended with that status,
        so its ``call.failed`` webhook goes out. Store failures are logged only:
        Twilio does not retry status callbacks anyway."""
        if self.store is None:
            return
        kept = {k: fields[k] for k in CARRIER_STATUS_FIELDS if fields.get(k)}
        status = fields.get("CallStatus", "")
        now = time.time()
        try:
            call_id = await self.store.find_call("call_sid", call_sid)
            if call_id is None:
                if status not in NEVER_CONNECTED or not create_missing:
                    return  # ringing etc. before the stream: its record does not exist yet
                call_id = new_id()
                meta = {"call_sid": call_sid, "carrier_status": status}
                meta.update({k.lower(): fields[k] for k in ("From", "To") if fields.get(k)})
                await self.store.start_call(
                    call_id,
                    at=now,
                    transport="twilio",
                    meta=meta,
                    webhooks=self.webhook_urls(self.settings),
                )
                await self.store.add_event(call_id, CARRIER_STATUS_KIND, kept, now)
                await self.store.end_call(call_id, status, at=now)
            else:
                await self.store.add_event(call_id, CARRIER_STATUS_KIND, kept, now)
                meta = {"carrier_status": status}
                if fields.get("CallDuration"):
                    meta["carrier_duration_s"] = fields["CallDuration"]
                await self.store.update_meta(call_id, meta)
        except RecordError as exc:
            log.warning("call %s: status %s not recorded: %s", call_sid, status, exc)
            return
        if self.webhooks is not None:
            self.webhooks.nudge()

    def _count_cut(
        self, connection: ConnectionControl | None, recorder: CallRecorder | None
    ) -> None:
        """A session whose connection the server cut says why in metrics and its record."""
        if recorder is not None and self.registry.was_hung_up(recorder.call_id):
            recorder.outcome = HANGUP_OUTCOME
        cut = connection.cut_reason if connection is not None else None
        if cut is not None:
            self.metrics.sessions_cut.labels(cut).inc()
            if recorder is not None:
                recorder.outcome = cut

    def hangup_here(self, sid: str) -> bool:
        """End call ``sid`` if this process holds it (close 1000, "call hung up", the
        record's outcome ``api_hangup``): how a hang-up is delivered, from the calls
        API or, with Redis, from another worker's."""
        return self.registry.hang_up(sid)

    async def wait_idle(self) -> None:
        """Return once no session is open (tests and the drain use it)."""
        await self.registry.wait_idle()

    async def wait_open(self, count: int = 1) -> None:
        """Return once at least ``count`` sessions are open."""
        await self.registry.wait_open(count)

    async def drain(self, timeout: float) -> None:
        """Refuse new calls, give open ones ``timeout`` s to end, then close them (1001)."""
        await self.registry.drain(timeout)


def agent_book(config: Config) -> AgentBook:
    """The agents file's agents, or one ``default`` agent made of the server's own
    settings (``VANTUM_SYSTEM_PROMPT`` taken literally: it predates templates)."""
    if config.agents_file:
        return load_agents(config.agents_file, config.default_agent)
    prompt = config.system_prompt or DEFAULT_SYSTEM_PROMPT
    book = AgentBook({"default": AgentSpec("default", escape(prompt))}, "default")
    if config.default_agent not in (None, "default"):
        raise AgentsFileError(
            f"--default-agent {config.default_agent!r} needs an agents file (--agents); "
            "without one the only agent is 'default'"
        )
    return book


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
