"""Twilio's HTTP webhooks: the voice URL that answers a call, and status callbacks.

``POST /twilio/voice`` is what a Twilio number calls when someone dials it. We
answer TwiML ``<Connect><Stream>`` pointing Twilio at ``/twilio/stream`` on our
public host, passing the call's details as stream parameters so the session
knows who is calling without a REST lookup, and a one-time stream ticket
(``vantum.protocol.twilio.ticket``) without which the stream is not served.
``POST /twilio/status`` receives call progress callbacks: each is added to the
call's record (status, durations), and a call that never connected (busy, no
answer, failed) gets a record of its own, so its ``call.failed`` webhook goes out
(an outbound call's go to its dial record instead, ``twilio_dial``);
``POST /twilio/amd`` the asynchronous answering-machine verdicts of outbound calls.

Every request is checked against ``X-Twilio-Signature`` when an auth token is
configured: an unsigned webhook would let anyone on the internet start
sessions that spend STT, LLM and TTS money. The signature covers the URL
Twilio called, which behind a TLS proxy is not the URL we were reached at, so
``config.public_url`` (when set) is the authority for both the signed URL and
the stream URL; without it the Host header and forwarded scheme are used.
"""

from __future__ import annotations

import logging
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

from ..asgi import read_body
from ..config import Config
from ..protocol.twilio import TICKET_PARAMETER, connect_stream_twiml
from ..protocol.twilio.dialing import (
    AMD_PARAMETER,
    AMD_PATH,
    DIAL_PARAMETER,
    STATUS_PATH,
    VARIABLE_PREFIX,
    VOICE_PATH,
)
from ..protocol.twilio_signature import SIGNATURE_HEADER, validate_signature
from .browser import ASGIReceive, ASGISend
from .host import SessionHost

log = logging.getLogger("vantum.twilio")

STREAM_PATH = "/twilio/stream"
MAX_BODY_BYTES = 64 * 1024
"""Twilio's webhook bodies are a few hundred bytes; anything larger is not Twilio."""

CALL_PARAMETERS = (
    "CallSid",
    "AccountSid",
    "From",
    "To",
    "Direction",
    "CallerName",
    "ForwardedFrom",
)
"""Webhook fields passed on to the stream as ``customParameters``."""

SESSION_PARAMETERS = ("language", "voiceId", "agent")
"""Query parameters of the webhook URL that configure the session (per phone number):
``agent`` names the agent that answers the number (docs/agents.md)."""
APOLOGY = "Sorry, this number cannot take calls right now. Goodbye."
"""Said (then hung up) when the webhook URL names an agent the server does not have."""

_ROUTES = {VOICE_PATH: ("GET", "POST"), STATUS_PATH: ("POST",), AMD_PATH: ("POST",)}

Pairs = list[tuple[str, str]]


async def handle_twilio_http(
    app: SessionHost, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    """Serve one ``/twilio/*`` HTTP request."""
    path, method = scope["path"], scope["method"]
    allowed = _ROUTES.get(path)
    if allowed is None:
        await _respond(send, 404, b"not found\n", "text/plain")
        return
    if method not in allowed:
        allow = [(b"allow", ", ".join(allowed).encode())]
        await _respond(send, 405, b"method not allowed\n", "text/plain", allow)
        return
    body = await read_body(receive, MAX_BODY_BYTES)
    if body is None:
        await _respond(send, 413, b"request body too large\n", "text/plain")
        return
    params: Pairs = _form_pairs(body) if method == "POST" else []
    config: Config = app.config
    if config.twilio_auth_token:
        signature = header_value(scope, SIGNATURE_HEADER)
        urls = request_urls(config, scope)
        if not any(
            validate_signature(config.twilio_auth_token, u, params, signature) for u in urls
        ):
            log.warning(
                "rejected %s %s: %s X-Twilio-Signature (signed URL tried: %s)",
                method,
                path,
                "invalid" if signature else "missing",
                urls[0],
            )
            await _respond(send, 403, b"invalid Twilio signature\n", "text/plain")
            return
    query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    fields = dict(params or query)
    dial_id = dict(query).get(DIAL_PARAMETER)
    if path == STATUS_PATH:
        log.info(
            "call %s status %s (duration %s s)",
            fields.get("CallSid", "?"),
            fields.get("CallStatus", "?"),
            fields.get("CallDuration", "-"),
        )
        if dial_id:  # one of our outbound calls: its dial record follows
            await app.dialer.on_status(dial_id, fields)
        if fields.get("CallSid"):
            # An outbound call that never connected is already its dial's record.
            await app.carrier_status(fields["CallSid"], dict(fields), create_missing=not dial_id)
        await _respond(send, 204, b"", "text/plain")
        return
    if path == AMD_PATH:
        await app.dialer.on_amd(dial_id, fields)
        await _respond(send, 204, b"", "text/plain")
        return
    await _answer_call(app, scope, send, fields, query)


async def _answer_call(
    app: SessionHost,
    scope: dict[str, Any],
    send: ASGISend,
    fields: Mapping[str, str],
    query: Sequence[tuple[str, str]],
) -> None:
    call_sid = fields.get("CallSid", "?")
    refusal = app.refusal()
    if refusal is not None:
        # <Reject> before answering: the caller hears busy and nobody is billed.
        log.warning("call %s rejected: %s", call_sid, refusal[2])
        app.metrics.sessions_refused.labels(refusal[0]).inc()
        await _respond(send, 200, reject_twiml("busy").encode(), "text/xml; charset=utf-8")
        return
    agent = dict(query).get("agent")
    if agent and app.agents.get(agent) is None:
        # A misconfigured number: tell the caller rather than run some other agent.
        log.error(
            "call %s: the voice webhook URL names unknown agent %r; apologising and "
            "hanging up (defined: %s)",
            call_sid,
            agent[:64],
            ", ".join(sorted(app.agents.agents)),
        )
        app.metrics.sessions_refused.labels("agent_unknown_agent").inc()
        await _respond(send, 200, apology_twiml().encode(), "text/xml; charset=utf-8")
        return
    parameters = {k: fields[k] for k in CALL_PARAMETERS if fields.get(k)}
    parameters.update({k: v for k, v in query if k in SESSION_PARAMETERS and v})
    # An outbound call's own (dialing.py): its dial id, AMD, template variables.
    parameters.update(
        {
            k: v
            for k, v in query
            if k in (DIAL_PARAMETER, AMD_PARAMETER) or k.startswith(VARIABLE_PREFIX)
        }
    )
    # The stream's handshake signature covers only its URL, the same for every call:
    # this one-time ticket is what ties the stream to this call (twilio_ws checks it).
    parameters[TICKET_PARAMETER] = app.stream_tickets.issue(
        fields.get("CallSid", ""), now=time.time()
    )
    stream_url = public_base(app.config, scope, websocket=True) + STREAM_PATH
    log.info("call %s from %s: streaming to %s", call_sid, fields.get("From", "?"), stream_url)
    twiml = connect_stream_twiml(stream_url, parameters)
    await _respond(send, 200, twiml.encode(), "text/xml; charset=utf-8")


def apology_twiml(text: str = APOLOGY) -> str:
    """``<Say>`` an apology, then ``<Hangup/>``."""
    response = ET.Element("Response")
    ET.SubElement(response, "Say").text = text
    ET.SubElement(response, "Hangup")
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


def reject_twiml(reason: str = "busy") -> str:
    response = ET.Element("Response")
    ET.SubElement(response, "Reject", {"reason": reason})
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


# --- URLs -------------------------------------------------------------------------


def public_base(config: Config, scope: Mapping[str, Any], *, websocket: bool = False) -> str:
    """``scheme://host[/prefix]`` Twilio reaches us at (ws/wss when ``websocket``)."""
    root = "" if config.public_url else scope.get("root_path", "")
    return _bases(config, scope, websocket)[0] + root


def request_urls(config: Config, scope: Mapping[str, Any]) -> list[str]:
    """The URLs Twilio may have signed for this request, most likely first.

    Without ``public_url`` both schemes are tried, since a TLS proxy makes an
    https request reach us as http; the HMAC still has to match, so this widens
    nothing an attacker can use.
    """
    websocket = scope.get("type") == "websocket"
    qs = scope.get("query_string", b"").decode("latin-1")
    # public_url already carries any prefix a proxy strips; otherwise root_path does.
    root = "" if config.public_url else scope.get("root_path", "")
    tail = root + scope["path"] + (f"?{qs}" if qs else "")
    return [base + tail for base in _bases(config, scope, websocket)]


def _bases(config: Config, scope: Mapping[str, Any], websocket: bool) -> list[str]:
    if config.public_url:
        parts = urllib.parse.urlsplit(config.public_url.rstrip("/"))
        scheme = _scheme(parts.scheme == "https" or parts.scheme == "wss", websocket)
        return [f"{scheme}://{parts.netloc}{parts.path}"]
    host = (
        header_value(scope, "X-Forwarded-Host")
        or header_value(scope, "Host")
        or _server_host(scope)
    )
    host = host.split(",")[0].strip()
    forwarded = (header_value(scope, "X-Forwarded-Proto") or "").split(",")[0].strip().lower()
    secure = forwarded in ("https", "wss") or (
        not forwarded and scope.get("scheme") in ("https", "wss")
    )
    return [f"{_scheme(secure, websocket)}://{host}", f"{_scheme(not secure, websocket)}://{host}"]


def _scheme(secure: bool, websocket: bool) -> str:
    if websocket:
        return "wss" if secure else "ws"
    return "https" if secure else "http"


def _server_host(scope: Mapping[str, Any]) -> str:
    server = scope.get("server")
    if not server:
        return "localhost"
    host, port = server
    return f"{host}:{port}" if port else str(host)


def header_value(scope: Mapping[str, Any], name: str) -> str | None:
    wanted = name.lower().encode("latin-1")
    for key, value in scope.get("headers", ()):
        if key.lower() == wanted:
            return str(value.decode("latin-1"))
    return None


# --- HTTP plumbing -------------------------------------------------------------------


def _form_pairs(body: bytes) -> Pairs:
    return urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)


async def _respond(
    send: ASGISend,
    status: int,
    body: bytes,
    content_type: str,
    extra: Sequence[tuple[bytes, bytes]] = (),
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
