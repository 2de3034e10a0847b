"""Fake Telnyx for tests: Call Control (REST + signed webhooks) and the media-stream caller.

Telnyx works the other way round from Twilio: it POSTs a ``call.initiated``
webhook (JSON, signed with Ed25519 over ``timestamp|body``) and then waits for the
application to act through the REST API; ``actions/answer`` with ``stream_url``
makes it open the media WebSocket, send ``connected`` and ``start`` (with the
``client_state`` the answer set) and stream 20 ms ``media`` frames. This module has
both halves, over real sockets:

* :func:`serve_fake_telnyx_rest` — Call Control: Bearer auth (401), unknown calls
  (404), ended calls (422, code 90018), every action recorded in ``actions``;
  ``hangup``/``transfer`` end that call's media stream, as on the real network;
  ``send_dtmf`` checks its body (``digits``, ``duration_millis``) and changes
  nothing on the stream (Telnyx sends the keys out of band).
* :func:`send_webhook` — a signed webhook, as Telnyx sends it (``forge=`` and
  ``timestamp=`` for the refusal tests).
* :func:`place_telnyx_call` — webhook, wait for the server's ``answer``, then open
  the stream it asked for: a :class:`FakeTelnyxCall`, which is the fake Twilio
  caller (real-time mic, playback that echoes marks, honours ``clear`` and returns
  queued marks at once, as Telnyx documents) speaking Telnyx frames.
"""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager, suppress
from typing import Any

import attrs
import httpx
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

from ..asgi import read_body, serve_app, serve_lifespan
from ..protocol import alaw, mulaw
from ..protocol.telnyx import (
    MediaFormat,
    OutboundClear,
    OutboundMark,
    TelnyxConnected,
    TelnyxDtmf,
    TelnyxMark,
    TelnyxMedia,
    TelnyxProtocolError,
    TelnyxStart,
    TelnyxStop,
    encode_inbound,
    parse_outbound,
)
from ..protocol.telnyx.messages import InboundEvent
from ..protocol.telnyx.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign_webhook
from .change import ChangeSignal
from .fake_twilio import CLOSE_GRACE_S, FakeTwilioCall, FakeTwilioConfig


def new_signing_key() -> Ed25519PrivateKey:
    """A Telnyx-like account key pair; ``public_key_b64(key)`` goes in TELNYX_PUBLIC_KEY."""
    return Ed25519PrivateKey.generate()


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


@attrs.frozen
class FakeTelnyxConfig:
    call_control_id: str = attrs.field(factory=lambda: "v3:" + secrets.token_urlsafe(30))
    call_session_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    stream_id: str = attrs.field(factory=lambda: str(uuid.uuid4()))
    connection_id: str = "2811212257810187875"
    from_number: str = "+13122010094"
    to_number: str = "+13122123456"
    signing_key: Ed25519PrivateKey | None = attrs.field(default=None, eq=False)
    """Sign webhooks with this key (None: unsigned)."""
    media_format: MediaFormat = attrs.Factory(MediaFormat)
    """PCMU or PCMA at 8 kHz (the fake's mic and ear are 8 kHz)."""
    speed: float | None = 1.0
    playout_delay: float = 0.0
    max_buffered_s: float = 120.0


def call_initiated(cfg: FakeTelnyxConfig) -> dict[str, Any]:
    """The ``call.initiated`` webhook of an incoming call, as Telnyx posts it."""
    return {
        "data": {
            "event_type": "call.initiated",
            "id": str(uuid.uuid4()),
            "occurred_at": "2026-11-30T07:00:00.000000Z",
            "payload": {
                "call_control_id": cfg.call_control_id,
                "call_leg_id": str(uuid.uuid4()),
                "call_session_id": cfg.call_session_id,
                "client_state": None,
                "connection_id": cfg.connection_id,
                "direction": "incoming",
                "from": cfg.from_number,
                "to": cfg.to_number,
                "state": "parked",
            },
            "record_type": "event",
        },
        "meta": {"attempt": 1, "delivered_to": ""},
    }


async def send_webhook(
    url: str,
    event: Mapping[str, Any],
    key: Ed25519PrivateKey | None,
    *,
    timestamp: int | None = None,
    forge: bool = False,
    body: bytes | None = None,
) -> httpx.Response:
    """POST ``event`` like Telnyx: JSON, signed when ``key`` is given. ``forge`` signs
    with another key; ``timestamp`` overrides the signing time (stale webhooks)."""
    data = body if body is not None else json.dumps(event).encode()
    headers = {"content-type": "application/json", "user-agent": "telnyx-webhooks"}
    if key is not None:
        ts = int(time.time()) if timestamp is None else timestamp
        signer = Ed25519PrivateKey.generate() if forge else key
        headers[SIGNATURE_HEADER] = sign_webhook(signer, data, ts)
        headers[TIMESTAMP_HEADER] = str(ts)
    async with httpx.AsyncClient(timeout=10.0) as client:
        return await client.post(url, content=data, headers=headers)


# --- the media stream ------------------------------------------------------------------


class FakeTelnyxCall(FakeTwilioCall):
    """One call's media stream seen from Telnyx: the fake Twilio line, Telnyx's frames."""

    def __init__(
        self, ws: WebSocketConnection, config: FakeTelnyxConfig, client_state: str | None
    ) -> None:
        line = FakeTwilioConfig(
            speed=config.speed,
            playout_delay=config.playout_delay,
            max_buffered_s=config.max_buffered_s,
        )
        super().__init__(ws, line)
        self.telnyx = config
        self.client_state = client_state

    async def send_telnyx(self, build: Callable[[int], InboundEvent]) -> None:
        async with self._send_lock:
            self._seq += 1
            await self.ws.send_message(encode_inbound(build(self._seq)))

    async def press(self, digit: str) -> None:
        await self.send_telnyx(lambda seq: TelnyxDtmf(seq, self.telnyx.stream_id, digit))

    async def hang_up(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        cfg = self.telnyx
        try:
            await self.send_telnyx(lambda seq: TelnyxStop(seq, cfg.stream_id, cfg.call_control_id))
            await self.ws.aclose()
        except ConnectionClosed:
            pass

    async def _start(self) -> None:
        cfg = self.telnyx
        await self.send_raw(encode_inbound(TelnyxConnected()))
        await self.send_telnyx(
            lambda seq: TelnyxStart(
                seq,
                cfg.stream_id,
                cfg.call_control_id,
                cfg.from_number,
                cfg.to_number,
                self.client_state,
                cfg.media_format,
            )
        )

    async def _send_media(self, payload: bytes, chunk: int) -> None:
        # The line's mic hands mu-law; a PCMA call carries A-law.
        if self.telnyx.media_format.encoding == "PCMA":
            payload = alaw.encode(mulaw.decode(payload))
        timestamp = (chunk - 1) * 20
        await self.send_telnyx(
            lambda seq: TelnyxMedia(seq, self.telnyx.stream_id, payload, chunk, timestamp)
        )

    def _on_message(self, message: str | bytes) -> None:
        try:
            event = parse_outbound(message)
        except TelnyxProtocolError as exc:
            self.bad_messages.append(f"{exc}: {message[:200]!r}")
            return
        if isinstance(event, OutboundMark):
            self._queue_mark(event.name)
        elif isinstance(event, OutboundClear):
            self._clear_queue()
        else:
            fmt = self.telnyx.media_format
            decode = alaw.decode if fmt.encoding == "PCMA" else mulaw.decode
            self._queue_audio(decode(event.payload), len(event.payload))

    async def _echo(self, name: str) -> None:
        with suppress(ConnectionClosed):
            await self.send_telnyx(lambda seq: TelnyxMark(seq, self.telnyx.stream_id, name))
        self._changed.notify()

    async def _watch_telnyx(self, rest: FakeTelnyxRest) -> None:
        await rest.wait_ended(self.telnyx.call_control_id)
        await self.hang_up()


@asynccontextmanager
async def dial_fake_telnyx(
    stream_url: str,
    config: FakeTelnyxConfig | None = None,
    *,
    client_state: str | None = None,
    rest: FakeTelnyxRest | None = None,
) -> AsyncIterator[FakeTelnyxCall]:
    """Open the media stream at ``stream_url`` as Telnyx does after an answer."""
    cfg = config or FakeTelnyxConfig()
    if rest is not None:
        rest.add_call(cfg.call_control_id)
    with trio.CancelScope() as teardown:  # bounded, as dial_fake_twilio's
        async with open_websocket_url(stream_url, disconnect_timeout=2) as ws:
            async with trio.open_nursery() as nursery:
                call = FakeTelnyxCall(ws, cfg, client_state)
                await call._start()
                nursery.start_soon(call._reader)
                nursery.start_soon(call._player)
                nursery.start_soon(call._mic)
                if rest is not None:
                    nursery.start_soon(call._watch_telnyx, rest)
                try:
                    yield call
                finally:
                    with trio.CancelScope(shield=True), trio.move_on_after(2):
                        await call.hang_up()
                    nursery.cancel_scope.cancel()
                    teardown.deadline = trio.current_time() + CLOSE_GRACE_S


@asynccontextmanager
async def place_telnyx_call(
    server_url: str,
    rest: FakeTelnyxRest,
    config: FakeTelnyxConfig | None = None,
    *,
    webhook_path: str = "/telnyx/webhook",
) -> AsyncIterator[FakeTelnyxCall]:
    """An incoming call end to end: the signed ``call.initiated`` webhook to the server
    at ``server_url``, its ``actions/answer`` at the fake REST API, then the stream the
    answer asked for, with the answer's ``client_state`` (the one-time ticket) in ``start``."""
    cfg = config or FakeTelnyxConfig()
    rest.add_call(cfg.call_control_id)
    response = await send_webhook(server_url + webhook_path, call_initiated(cfg), cfg.signing_key)
    if response.status_code != 200:
        raise RuntimeError(f"the webhook answered HTTP {response.status_code}: {response.text}")
    answer = rest.answer_for(cfg.call_control_id)
    if answer is None:
        raise RuntimeError("the server did not answer the call through Call Control")
    async with dial_fake_telnyx(
        answer.body["stream_url"], cfg, client_state=answer.body.get("client_state"), rest=rest
    ) as call:
        yield call


# --- Call Control REST ---------------------------------------------------------------


@attrs.frozen
class ActionRequest:
    call_control_id: str
    action: str
    body: Mapping[str, Any] = attrs.field(hash=False)
    status: int


ACTIONS = frozenset(
    {"answer", "hangup", "transfer", "reject", "send_dtmf", "streaming_start", "streaming_stop"}
)
DTMF_DIGITS = frozenset("0123456789ABCD*#wW")
"""``send_dtmf``'s ``digits``: keys, ``w`` (0.5 s) and ``W`` (1 s) pauses (Telnyx's
API reference)."""


@attrs.define
class FakeTelnyxRest:
    """The running fake Call Control API: base URL, known calls, every action asked."""

    api_key: str = "KEYfake-telnyx"
    base_url: str = ""
    calls: dict[str, str] = attrs.Factory(dict)
    """call_control_id -> "parked" / "active" / "ended"."""
    actions: list[ActionRequest] = attrs.Factory(list)
    rejected: list[int] = attrs.Factory(list)
    _ended: dict[str, trio.Event] = attrs.Factory(dict)
    _changed: ChangeSignal = attrs.Factory(ChangeSignal)
    _failures: deque[tuple[int, str, str]] = attrs.Factory(deque)

    def add_call(self, call_control_id: str) -> None:
        self.calls.setdefault(call_control_id, "parked")
        self._ended.setdefault(call_control_id, trio.Event())

    def answer_for(self, call_control_id: str) -> ActionRequest | None:
        for a in self.actions:
            if a.call_control_id == call_control_id and a.action == "answer" and a.status == 200:
                return a
        return None

    def done(self, action: str) -> list[ActionRequest]:
        return [a for a in self.actions if a.action == action and a.status == 200]

    def fail_next(
        self, status: int, code: str = "90018", title: str = "Call has already ended"
    ) -> None:
        self._failures.append((status, code, title))

    async def wait_ended(self, call_control_id: str) -> None:
        await self._ended.setdefault(call_control_id, trio.Event()).wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        await self._changed.wait_until(predicate)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = (await read_body(receive)) or b""
        status, payload = self._handle(scope, body)
        self._changed.notify()
        data = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(data)).encode()),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": data})

    def _handle(self, scope: dict[str, Any], body: bytes) -> tuple[int, dict[str, Any]]:
        headers = dict(scope["headers"])
        if headers.get(b"authorization", b"").decode("latin-1") != f"Bearer {self.api_key}":
            self.rejected.append(401)
            return _error(401, "10009", "Authentication failed")
        parts = scope["path"].split("/")
        # /v2/calls/{id}/actions/{action}
        if len(parts) != 6 or parts[1:3] != ["v2", "calls"] or parts[4] != "actions":
            self.rejected.append(404)
            return _error(404, "10005", "Resource not found")
        call_id, action = parts[3], parts[5]
        if scope["method"] != "POST" or action not in ACTIONS:
            self.rejected.append(404)
            return _error(404, "10005", "Resource not found")
        try:
            params = json.loads(body or b"{}")
        except ValueError:
            return _error(400, "10015", "Invalid JSON")
        status, payload = self._act(call_id, action, params if isinstance(params, dict) else {})
        self.actions.append(ActionRequest(call_id, action, params, status))
        return status, payload

    def _act(self, call_id: str, action: str, params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self._failures:
            return _error(*self._failures.popleft())
        state = self.calls.get(call_id)
        if state is None:
            return _error(404, "10005", "Resource not found")
        if state == "ended":
            return _error(422, "90018", "Call has already ended")
        if action == "answer":
            if state != "parked":
                return _error(422, "90019", "Call has already been answered")
            url = params.get("stream_url")
            if url is not None and not str(url).startswith(("ws://", "wss://")):
                return _error(422, "10032", "stream_url must be a WebSocket URL")
            self.calls[call_id] = "active"
        elif action == "send_dtmf":
            return _send_dtmf(params)
        elif action in ("hangup", "reject", "transfer"):
            if action == "transfer" and not params.get("to"):
                return _error(422, "10032", "to is required")
            self.calls[call_id] = "ended"
            self._ended[call_id].set()
        return 200, {"data": {"result": "ok"}}


def _send_dtmf(params: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """Checks the body as Telnyx documents it: ``digits`` required (keys and pauses),
    ``duration_millis`` 100-500 (default 250), optional ``client_state`` and
    ``command_id``. Stricter than Telnyx in one way: an unknown field is refused, so
    a misspelt one (``duration_ms``) fails a test instead of being ignored."""
    digits = params.get("digits")
    if not isinstance(digits, str) or not digits or not set(digits) <= DTMF_DIGITS:
        return _error(422, "10032", "digits must be 0-9, A-D, *, # and w/W pauses")
    duration = params.get("duration_millis", 250)
    if isinstance(duration, bool) or not isinstance(duration, int) or not 100 <= duration <= 500:
        return _error(422, "10032", "duration_millis must be an integer from 100 to 500")
    unknown = set(params) - {"digits", "duration_millis", "client_state", "command_id"}
    if unknown:
        return _error(422, "10032", f"unknown parameters: {sorted(unknown)}")
    return 200, {"data": {"result": "ok"}}


def _error(status: int, code: str, title: str) -> tuple[int, dict[str, Any]]:
    return status, {"errors": [{"code": code, "title": title, "detail": title}]}


@asynccontextmanager
async def serve_fake_telnyx_rest(
    api_key: str = "KEYfake-telnyx", host: str = "127.0.0.1", port: int = 0
) -> AsyncIterator[FakeTelnyxRest]:
    """Run the fake Call Control API; use ``fake.base_url`` as TELNYX_API_BASE."""
    fake = FakeTelnyxRest(api_key)
    async with serve_app(fake.app, host, port) as url:
        fake.base_url = url
        yield fake


__all__ = [
    "ActionRequest",
    "FakeTelnyxCall",
    "FakeTelnyxConfig",
    "FakeTelnyxRest",
    "call_initiated",
    "dial_fake_telnyx",
    "new_signing_key",
    "place_telnyx_call",
    "public_key_b64",
    "send_webhook",
    "serve_fake_telnyx_rest",
]
