"""The calls API (``/v1``) on the server's own port: read call records, end a call.

Routes: ``GET /v1/calls`` (newest first; ``since``/``until`` on the start time,
``agent``, ``transport``; ``limit`` ≤ :data:`MAX_PAGE`; ``cursor`` from the previous
page), ``GET /v1/calls/{id}``, ``GET /v1/calls/{id}/recording`` and
``POST /v1/calls/{id}/hangup``, and ``POST /v1/calls`` (place an outbound call through
Twilio, docs/telephony.md: ``{to, from, agent, variables, amd}`` → 201 with the dial's
id and the carrier's call SID). Every request needs ``Authorization: Bearer <key>``
with a key from ``VANTUM_API_KEYS``; an entry ``key:read`` may only read (403 on a
hang-up). No keys configured: the API is off (404 ``api_disabled``). Errors are
``{"error": {"code", "message"}}`` with the stable codes of docs/integration.md.
Keyset pagination (on start time, then id) keeps pages stable while calls arrive.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import logging
import re
import urllib.parse
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ..agents.loader import AgentBook
from ..config import Config
from ..protocol.twilio.dialing import DialRequest
from ..records.payloads import call_header, ended_data
from ..records.store import CallQuery, CallRecord, CallStore, CallSummary, RecordError
from ..transports.browser import ASGIReceive, ASGISend
from ..transports.twilio_dial import DialRefused, OutboundDialer
from .cluster import CallRegistry


class ApiHost(Protocol):
    """What the calls API uses of the server (``VantumApp``), so it needs no import of it."""

    config: Config
    agents: AgentBook
    store: CallStore | None
    calls: CallRegistry
    dialer: OutboundDialer

    def hangup_here(self, sid: str) -> bool: ...


log = logging.getLogger("vantum.api")

FILE_CHUNK = 64 * 1024
DEFAULT_PAGE = 50
MAX_PAGE = 200
MAX_BODY = 16 * 1024
READ, WRITE = "read", "write"
_CALL = re.compile(r"^/v1/calls/([A-Za-z0-9._:-]{1,128})(/recording|/hangup)?$")


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def parse_keys(entries: tuple[str, ...]) -> dict[str, frozenset[str]]:
    """``key`` → read and write; ``key:read`` → read only."""
    keys: dict[str, frozenset[str]] = {}
    for entry in entries:
        key, _, scope = entry.partition(":")
        keys[key] = frozenset({READ}) if scope == READ else frozenset({READ, WRITE})
    return keys


async def handle_calls_api(
    app: ApiHost, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    try:
        status, body = await _route(app, scope, receive)
        if isinstance(body, RecordingFile):
            await _send_file(body, scope, send)
            return
    except ApiError as exc:
        status, body = exc.status, {"error": {"code": exc.code, "message": exc.message}}
    except RecordError as exc:
        log.warning("calls API: store failed: %s", exc)
        status = 503
        body = {"error": {"code": "store_unavailable", "message": "call store unavailable"}}
    data = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
    ]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="vantum"'))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@attrs.frozen
class RecordingFile:
    path: Path
    size: int


async def _route(
    app: ApiHost, scope: dict[str, Any], receive: ASGIReceive
) -> tuple[int, dict[str, Any] | RecordingFile]:
    keys = parse_keys(app.config.api_keys)
    if not keys:
        raise ApiError(404, "api_disabled", "the calls API is off (VANTUM_API_KEYS is not set)")
    granted = _authenticate(keys, scope)
    path, method = scope["path"], scope["method"]
    if path == "/v1/calls":
        if method == "POST":
            if WRITE not in granted:
                raise ApiError(403, "forbidden", "this API key may only read")
            return await _dial(app, await _json_body(receive))
        _method(method, "GET")
        return 200, await _list(app, scope)
    match = _CALL.match(path)
    if match is None:
        raise ApiError(404, "not_found", f"no route {path}")
    call_id, sub = match.group(1), match.group(2)
    if sub == "/hangup":
        _method(method, "POST")
        if WRITE not in granted:
            raise ApiError(403, "forbidden", "this API key may only read")
        return await _hangup(app, call_id)
    _method(method, "GET")
    record = await _record(app, call_id)
    if sub == "/recording":
        return 200, await _recording_file(record)
    events = [
        {"seq": e.seq, "type": e.kind, "at": e.at, "payload": e.payload} for e in record.events
    ]
    return 200, {"call": _detail(record), "events": events}


async def _recording_file(record: CallRecord) -> RecordingFile:
    saved = ended_data(record)["recording"]
    if not saved or not saved.get("path"):
        raise ApiError(404, "no_recording", f"call {record.call_id} has no recording")
    path = Path(str(saved["path"]))
    try:
        size = (await trio.to_thread.run_sync(path.stat)).st_size
    except OSError:
        raise ApiError(404, "no_recording", f"call {record.call_id}: file is gone") from None
    return RecordingFile(path, size)


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` / ``a-`` / ``-n`` as (first, last) inclusive; None: the
    whole file (no header, or a form we do not serve, such as several ranges)."""
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if first_s == "":
            suffix = int(last_s)
            if suffix <= 0:
                raise ApiError(416, "range_not_satisfiable", "empty suffix range")
            return max(0, size - suffix), size - 1
        first = int(first_s)
        last = size - 1 if last_s == "" else min(int(last_s), size - 1)
    except ValueError:
        return None
    if first >= size or first > last or first < 0:
        raise ApiError(416, "range_not_satisfiable", f"the file has {size} bytes")
    return first, last


async def _send_file(file: RecordingFile, scope: dict[str, Any], send: ASGISend) -> None:
    header = ""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"range":
            header = value.decode("latin-1")
    try:
        span = parse_range(header, file.size) if header else None
    except ApiError as exc:
        body = json.dumps({"error": {"code": exc.code, "message": exc.message}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"content-range", f"bytes */{file.size}".encode()),
        ]
        await send({"type": "http.response.start", "status": 416, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    first, last = span if span is not None else (0, file.size - 1)
    length = max(0, last - first + 1)
    headers = [
        (b"content-type", b"audio/wav"),
        (b"content-length", str(length).encode()),
        (b"accept-ranges", b"bytes"),
        (b"cache-control", b"no-store"),
    ]
    if span is not None:
        headers.append((b"content-range", f"bytes {first}-{last}/{file.size}".encode()))
    status = 206 if span is not None else 200
    await send({"type": "http.response.start", "status": status, "headers": headers})
    if scope["method"] == "HEAD" or length == 0:
        await send({"type": "http.response.body", "body": b""})
        return
    async with await trio.open_file(file.path, "rb") as f:
        await f.seek(first)
        left = length
        while left > 0:
            chunk = await f.read(min(FILE_CHUNK, left))
            if not chunk:  # the file shrank under us: end the body short
                break
            left -= len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": left > 0})
    if left > 0:
        await send({"type": "http.response.body", "body": b""})


def _authenticate(keys: dict[str, frozenset[str]], scope: dict[str, Any]) -> frozenset[str]:
    header = ""
    for name, value in scope.get("headers") or ():
        if name.lower() == b"authorization":
            header = value.decode("latin-1")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "missing Authorization: Bearer <API key>")
    token = token.strip()
    for key, granted in keys.items():
        if hmac.compare_digest(key.encode(), token.encode()):
            return granted
    raise ApiError(401, "unauthorized", "unknown API key")


def _method(method: str, allowed: str) -> None:
    if method != allowed and not (allowed == "GET" and method == "HEAD"):
        raise ApiError(405, "method_not_allowed", f"use {allowed}")


async def _record(app: ApiHost, call_id: str) -> CallRecord:
    record = None if app.store is None else await app.store.get_call(call_id)
    if record is None:
        raise ApiError(404, "call_not_found", f"no call {call_id}")
    return record


async def _hangup(app: ApiHost, call_id: str) -> tuple[int, dict[str, Any]]:
    # Here, else (with VANTUM_REDIS_URL) on the worker that holds it.
    if app.hangup_here(call_id) or await app.calls.hangup(call_id):
        log.info("call %s: hung up through the API", call_id)
        return 202, {"call_id": call_id, "status": "hanging_up"}
    if app.store is not None and await app.store.get_call(call_id) is not None:
        raise ApiError(409, "call_not_live", f"call {call_id} is not live on this server")
    raise ApiError(404, "call_not_found", f"no call {call_id}")


async def _json_body(receive: ASGIReceive) -> dict[str, Any]:
    """The request's JSON object (at most :data:`MAX_BODY` bytes)."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            raise ApiError(400, "invalid_request", "the request ended before its body")
        body += message.get("body", b"")
        if len(body) > MAX_BODY:
            raise ApiError(413, "body_too_large", f"the body is over {MAX_BODY} bytes")
        if not message.get("more_body"):
            break
    try:
        data = json.loads(body or b"null")
    except ValueError:
        raise ApiError(400, "invalid_json", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_request", "the body must be a JSON object")
    return data


async def _dial(app: ApiHost, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """``POST /v1/calls``: place an outbound call that runs ``agent`` (docs/telephony.md)."""
    unknown = set(body) - {"to", "from", "agent", "variables", "amd"}
    if unknown:
        raise ApiError(422, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    to, from_, agent = body.get("to"), body.get("from"), body.get("agent")
    variables, amd = body.get("variables", {}), body.get("amd", True)
    if not isinstance(to, str) or not isinstance(from_, str):
        raise ApiError(422, "invalid_request", "`to` and `from` are required E.164 numbers")
    if agent is not None and (not isinstance(agent, str) or app.agents.get(agent) is None):
        raise ApiError(422, "unknown_agent", f"no agent {str(agent)[:64]!r} is defined")
    if not isinstance(variables, dict) or not isinstance(amd, bool):
        raise ApiError(422, "invalid_request", "`variables` must be an object, `amd` a boolean")
    if not app.config.public_url:
        raise ApiError(
            503, "dialing_not_configured", "outbound calls need VANTUM_PUBLIC_URL (and Twilio)"
        )
    try:
        request = DialRequest(to, from_, agent, variables, amd=amd)
    except ValueError as exc:
        raise ApiError(422, "invalid_request", str(exc)) from None
    try:
        result = await app.dialer.dial(request, app.config.public_url)
    except DialRefused as exc:
        status = {"rate_limited": 429, "too_many_calls": 429, "not_configured": 503}
        raise ApiError(status.get(exc.reason, 502), exc.reason, exc.message) from None
    log.info("dialled %s for agent %s: %s", to, agent or "(default)", result.call_sid)
    return 201, {"dial_id": result.dial_id, "call_sid": result.call_sid, "status": result.status}


async def _list(app: ApiHost, scope: dict[str, Any]) -> dict[str, Any]:
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))

    def one(name: str) -> str | None:
        values = query.get(name)
        return values[-1] if values else None

    raw_limit = one("limit")
    try:
        limit = DEFAULT_PAGE if raw_limit is None else int(raw_limit)
    except ValueError:
        raise ApiError(400, "invalid_parameter", "limit must be an integer") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "invalid_parameter", f"limit must be 1..{MAX_PAGE}")
    cursor = one("cursor")
    q = CallQuery(
        limit=limit + 1,  # one more tells whether there is a next page
        since=_time(one("since"), "since"),
        until=_time(one("until"), "until"),
        agent=one("agent"),
        transport=one("transport"),
        after=None if cursor is None else _decode_cursor(cursor),
    )
    if app.store is None:
        return {"calls": [], "next_cursor": None}
    rows = await app.store.query_calls(q)
    page = rows[:limit]
    more = len(rows) > limit
    return {
        "calls": [_summary(s) for s in page],
        "next_cursor": _encode_cursor(page[-1]) if more else None,
    }


def _time(value: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO 8601 time with a zone."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name}: Unix seconds or ISO 8601") from None
    if parsed.tzinfo is None:
        raise ApiError(400, "invalid_parameter", f"{name}: an ISO 8601 time needs a zone")
    return parsed.timestamp()


def _encode_cursor(last: CallSummary) -> str:
    raw = json.dumps([last.started_at, last.call_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[float, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        started_at, call_id = json.loads(raw)
        return float(started_at), str(call_id)
    except (binascii.Error, ValueError, TypeError):
        raise ApiError(400, "invalid_cursor", "cursor is not one this API returned") from None


def _summary(s: CallSummary) -> dict[str, Any]:
    out = call_header(s)
    out.update(
        ended_at=s.ended_at,
        end_reason=s.outcome,
        duration_s=None if s.ended_at is None else round(s.ended_at - s.started_at, 3),
    )
    return out


def _detail(record: CallRecord) -> dict[str, Any]:
    return ended_data(record)
