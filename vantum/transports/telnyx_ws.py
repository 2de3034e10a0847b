"""Telnyx media streaming as a session Transport: the phone transport with Telnyx's serializer.

Everything carrier-neutral (20 ms framing, marks, barge-in ``clear``, playback
accounting, admission by one-time ticket) is :mod:`vantum.transports.twilio_ws`'s;
Telnyx differs only in its frames (:class:`~vantum.protocol.telnyx.TelnyxSerializer`)
and in where the ticket travels (``client_state`` instead of ``<Parameter>``).
Telnyx does not sign the WebSocket handshake (its optional ``stream_auth_token`` is
a static secret), so the ticket is the stream's only credential: a stream whose
``start`` does not carry a fresh ticket for its ``call_control_id`` is closed with
1008 before any session exists.
"""

from __future__ import annotations

import logging
from typing import Any

from ..logs import bind
from ..protocol.ids import new_id
from ..protocol.telnyx import MediaFormat, TelnyxSerializer
from .browser import ASGIReceive, ASGISend
from .host import SessionHost
from .twilio_ws import MediaStreamTransport, admit_stream, agent_settings

log = logging.getLogger("vantum.telnyx")


class TelnyxTransport(MediaStreamTransport):
    """:class:`MediaStreamTransport` speaking Telnyx media streaming (bidirectional rtp)."""

    def __init__(
        self,
        session_id: str,
        receive: ASGIReceive,
        send: ASGISend,
        *,
        media_format: MediaFormat | None = None,
        max_frame_bytes: int = 1 << 20,
    ) -> None:
        super().__init__(
            session_id,
            receive,
            send,
            TelnyxSerializer(media_format),
            max_frame_bytes=max_frame_bytes,
            carrier="Telnyx",
        )


async def serve_telnyx_stream(
    app: SessionHost, scope: dict[str, Any], receive: ASGIReceive, send: ASGISend
) -> None:
    """Accept Telnyx's media WebSocket and run a session on it (ticket checked first)."""
    connect = await receive()
    if connect["type"] != "websocket.connect":
        return
    refusal = app.refusal()
    if refusal is not None:
        reason, code, message = refusal
        log.warning("refused Telnyx media stream: %s", message)
        app.metrics.sessions_refused.labels(reason).inc()
        await send({"type": "websocket.close", "code": code})
        return
    await send({"type": "websocket.accept"})
    transport = TelnyxTransport(new_id(), receive, send, max_frame_bytes=app.config.max_frame_bytes)
    with bind(session_id=transport.session_id, transport="telnyx"):
        if await admit_stream(app, transport, "telnyx"):
            settings = await agent_settings(app, transport, "telnyx")
            if settings is not None:
                await app.serve_session(transport, "telnyx", settings)
