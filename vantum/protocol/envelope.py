"""The MessagePack envelope every browser frame travels in.

``{eventType, eventId, sessionId, payload}`` (+ ``requestType`` on errors). Decoding
is strict and total: any byte string either yields an :class:`Envelope` or raises
:class:`ProtocolError` naming the error event to send back — never anything else.
"""

from __future__ import annotations

from typing import Any

import attrs
import msgpack

from ..errors import ProtocolError
from . import events as ev
from .ids import new_id


@attrs.frozen
class Envelope:
    event_type: str
    event_id: str
    session_id: str
    payload: dict[str, Any]
    request_type: str | None = None


def encode(envelope: Envelope) -> bytes:
    return encode_fields(
        envelope.event_type,
        envelope.event_id,
        envelope.session_id,
        envelope.payload,
        envelope.request_type,
    )


_packer = msgpack.Packer(use_bin_type=True)


def encode_fields(
    event_type: str,
    event_id: str,
    session_id: str,
    payload: dict[str, Any],
    request_type: str | None = None,
) -> bytes:
    """:func:`encode` without building an :class:`Envelope` first (the egress hot path:
    25 audio chunks a second per call)."""
    frame: dict[str, Any] = {
        "eventType": event_type,
        "eventId": event_id,
        "sessionId": session_id,
        "payload": payload,
    }
    if request_type is not None:
        frame["requestType"] = request_type
    try:
        out: bytes = _packer.pack(frame)
    except BaseException:
        _packer.reset()  # a failed pack may leave a partial frame in the buffer
        raise
    return out


def decode(data: bytes) -> Envelope:
    """Parse one client frame; raise ProtocolError (``error.system.unknown``) if malformed."""
    try:
        obj = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(ev.ERR_MALFORMED, f"frame is not valid MessagePack: {exc}") from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            ev.ERR_MALFORMED, f"frame must be a MessagePack map, got {type(obj).__name__}"
        )
    event_type = obj.get("eventType")
    if not isinstance(event_type, str) or not event_type:
        raise ProtocolError(ev.ERR_MALFORMED, "frame has no string eventType")
    request_type = event_type
    event_id = obj.get("eventId")
    if not isinstance(event_id, str) or not event_id:
        raise ProtocolError(ev.ERR_MALFORMED, "frame has no string eventId", request_type)
    session_id = obj.get("sessionId", "")
    if not isinstance(session_id, str):
        raise ProtocolError(
            ev.ERR_MALFORMED, "sessionId must be a string", request_type, event_id=event_id
        )
    payload = obj.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError(
            ev.ERR_MALFORMED,
            "payload must be a map",
            request_type,
            event_id=event_id,
            session_id=session_id,
        )
    return Envelope(event_type, event_id, session_id, payload)


def server_event(
    session_id: str,
    event_type: str,
    payload: dict[str, Any],
    *,
    event_id: str | None = None,
    request_type: str | None = None,
) -> Envelope:
    return Envelope(event_type, event_id or new_id(), session_id, payload, request_type)


def error_event(session_id: str, error: ProtocolError, event_id: str | None = None) -> Envelope:
    return server_event(
        session_id,
        error.event_type,
        {"message": error.message},
        event_id=event_id or error.event_id,
        request_type=error.request_type,
    )
