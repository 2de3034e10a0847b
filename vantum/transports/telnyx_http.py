"""Telnyx's webhook: ``POST /telnyx/webhook`` answers incoming calls with a media stream.

A Telnyx Call Control application posts every call event to one webhook URL. For
``call.initiated`` (direction ``incoming``) we answer through the REST API
(``actions/answer`` with ``stream_url`` = our ``/telnyx/stream`` and bidirectional
``rtp`` streaming), putting a one-time stream ticket in ``client_state``: Telnyx
hands it back in the stream's ``start``, and ``/telnyx/stream`` serves no stream
without it (as ``/twilio/stream`` needs its ``vantumTicket``). Other events are
logged and acknowledged.

When ``TELNYX_PUBLIC_KEY`` is set every request must carry a valid Ed25519
signature (``telnyx-signature-ed25519`` over ``telnyx-timestamp|body``, at most
5 minutes old) or it gets HTTP 403 and nothing else happens: an unsigned webhook
would let anyone make us answer calls and spend provider money.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from typing import Any

from ..asgi import read_body
from ..errors import ConfigError
from ..protocol.telnyx.call_control import answer_body, encode_client_state
from ..protocol.telnyx.webhook import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSignatureError,
    load_public_key,
    verify_webhook,
)
from ..protocol.twilio import TICKET_PARAMETER
from .browser import ASGIReceive, ASGISend
from .host import SessionHost
from .telnyx_rest import TelnyxAPIError, TelnyxREST
from .twilio_http import SESSION_PARAMETERS, _respond, header_value, public_base

log = logging.getLogger("vantum.telnyx")

WEBHOOK_PATH = "/telnyx/webhook"
STREAM_PATH = "/telnyx/stream"
MAX_BODY_BYTES = 64 * 1024
"""Telnyx's call webhooks are a couple of kilobytes; anything larger is not Telnyx."""


async def handle_telnyx_http(
    app: SessionHost, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    """Serve one ``/telnyx/*`` HTTP request."""
    if scope["path"] != WEBHOOK_PATH:
        await _respond(send, 404, b"not found\n", "text/plain")
        return
    if scope["method"] != "POST":
        await _respond(send, 405, b"method not allowed\n", "text/plain", [(b"allow", b"POST")])
        return
    body = await read_body(receive, MAX_BODY_BYTES)
    if body is None:
        await _respond(send, 413, b"request body too large\n", "text/plain")
        return
    key = app.config.telnyx_public_key
    if key:
        try:
            verify_webhook(
                load_public_key(key),
                body,
                header_value(scope, SIGNATURE_HEADER),
                header_value(scope, TIMESTAMP_HEADER),
                now=time.time(),
            )
        except WebhookSignatureError as exc:
            log.warning("rejected Telnyx webhook: %s", exc.message)
            app.metrics.sessions_refused.labels(f"telnyx_webhook_{exc.reason.value}").inc()
            await _respond(send, 403, b"invalid Telnyx signature\n", "text/plain")
            return
    try:
        event = json.loads(body)
        data = event["data"]
        event_type = data["event_type"]
        payload = data.get("payload") or {}
        if not isinstance(event_type, str) or not isinstance(payload, dict):
            raise TypeError("event_type/payload")
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("rejected Telnyx webhook: not a Telnyx event (%r)", exc)
        await _respond(send, 400, b"not a Telnyx event\n", "text/plain")
        return
    if event_type == "call.initiated" and payload.get("direction") == "incoming":
        await _answer_call(app, scope, payload)
    else:
        log.info(
            "Telnyx call %s: %s%s",
            str(payload.get("call_control_id", "?"))[:80],
            event_type[:64],
            f" ({payload['hangup_cause']})" if payload.get("hangup_cause") else "",
        )
    await _respond(send, 200, b"", "text/plain")


async def _answer_call(app: SessionHost, scope: dict[str, Any], payload: dict[str, Any]) -> None:
    """Answer with a stream, or reject (busy when full; unknown agent)."""
    call_id = payload.get("call_control_id")
    if not isinstance(call_id, str) or not call_id:
        log.warning("Telnyx call.initiated without a call_control_id: ignored")
        return
    try:
        rest = TelnyxREST.from_config(app.config)
    except ConfigError as exc:
        log.error("Telnyx call %s cannot be answered: %s", call_id, exc)
        return
    query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"))
    agent = dict(query).get("agent")
    try:
        refusal = app.refusal()
        if refusal is not None:
            log.warning("Telnyx call %s rejected: %s", call_id, refusal[2])
            app.metrics.sessions_refused.labels(refusal[0]).inc()
            await rest.reject(call_id, "USER_BUSY")
            return
        if agent and app.agents.get(agent) is None:
            log.error("Telnyx call %s: the webhook URL names unknown agent %r", call_id, agent[:64])
            app.metrics.sessions_refused.labels("agent_unknown_agent").inc()
            await rest.reject(call_id, "CALL_REJECTED")
            return
        params = {k: v for k, v in query if k in SESSION_PARAMETERS and v}
        params[TICKET_PARAMETER] = app.stream_tickets.issue(call_id, now=time.time())
        stream_url = public_base(app.config, scope, websocket=True) + STREAM_PATH
        log.info(
            "Telnyx call %s from %s: streaming to %s", call_id, payload.get("from"), stream_url
        )
        await rest.answer(call_id, answer_body(stream_url, encode_client_state(params)))
    except TelnyxAPIError as exc:
        log.warning("Telnyx call %s: %s", call_id, exc.message)
