"""Telnyx media streaming frames, both directions, parsed and built (sans-I/O).

Telnyx -> us (docs: "Stream call media over WebSocket", developers.telnyx.com):
``connected``, ``start`` (``stream_id``, ``start.call_control_id``, ``from``, ``to``,
``client_state``, ``custom_parameters``, ``media_format`` {encoding, sample_rate,
channels}), ``media`` (``media.track``/``chunk``/``timestamp``/``payload``: base64
RTP payload without headers), ``dtmf`` (``dtmf.digit``), ``mark`` (the echo of
ours), ``error`` (``payload.code``/``title``/``detail``) and ``stop``. Numbers
arrive as strings. Unlike Twilio, Telnyx does not promise media in order, so
sequence numbers are read but not enforced.

Us -> Telnyx (bidirectional ``rtp`` mode): ``{"event": "media", "media":
{"payload": ...}}``, ``{"event": "mark", "mark": {"name": ...}}`` and
``{"event": "clear"}``; the stream is implied by the socket. The ``encode_*`` and
:func:`parse_outbound` functions are the inverses, for the fake Telnyx.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

import attrs

from ...errors import VantumError


class TelnyxProtocolError(VantumError):
    """A Telnyx media-stream frame was malformed or out of place; ``event`` names it."""

    def __init__(self, message: str, event: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event


@attrs.frozen
class MediaFormat:
    encoding: str = "PCMU"
    sample_rate: int = 8000
    channels: int = 1


@attrs.frozen
class TelnyxConnected:
    version: str = "1.0.0"


@attrs.frozen
class TelnyxStart:
    sequence_number: int
    stream_id: str
    call_control_id: str
    from_number: str = ""
    to_number: str = ""
    client_state: str | None = None
    media_format: MediaFormat = MediaFormat()
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class TelnyxMedia:
    sequence_number: int
    stream_id: str
    payload: bytes
    chunk: int
    timestamp_ms: int
    track: str = "inbound"


@attrs.frozen
class TelnyxDtmf:
    sequence_number: int
    stream_id: str
    digit: str


@attrs.frozen
class TelnyxMark:
    sequence_number: int
    stream_id: str
    name: str


@attrs.frozen
class TelnyxError:
    code: int
    title: str
    detail: str = ""


@attrs.frozen
class TelnyxStop:
    sequence_number: int
    stream_id: str
    call_control_id: str


InboundEvent = (
    TelnyxConnected | TelnyxStart | TelnyxMedia | TelnyxDtmf | TelnyxMark | TelnyxError | TelnyxStop
)


@attrs.frozen
class OutboundMedia:
    payload: bytes


@attrs.frozen
class OutboundMark:
    name: str


@attrs.frozen
class OutboundClear:
    pass


OutboundEvent = OutboundMedia | OutboundMark | OutboundClear


# --- field readers -------------------------------------------------------------------


def _load(text: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TelnyxProtocolError(f"Telnyx frame is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise TelnyxProtocolError(f"Telnyx frame must be a JSON object, got {type(msg).__name__}")
    event = msg.get("event")
    if not isinstance(event, str):
        raise TelnyxProtocolError(f"Telnyx frame needs a string 'event', got {event!r}")
    return msg


def _obj(msg: dict[str, Any], key: str, event: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise TelnyxProtocolError(f"{event}: missing object field {key!r}", event)
    return value


def _str(msg: dict[str, Any], key: str, event: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise TelnyxProtocolError(f"{event}: missing string field {key!r}", event)
    return value


def _opt_str(msg: dict[str, Any], key: str, event: str) -> str | None:
    value = msg.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TelnyxProtocolError(f"{event}: field {key!r} must be a string or null", event)


def _int(msg: dict[str, Any], key: str, event: str, default: int | None = None) -> int:
    value = msg.get(key, default)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise TelnyxProtocolError(f"{event}: {key!r} must be a non-negative integer", event)


def _payload(media: dict[str, Any], event: str) -> bytes:
    try:
        return base64.b64decode(_str(media, "payload", event), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TelnyxProtocolError(f"{event}: payload is not base64: {exc}", event) from None


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


# --- Telnyx -> us --------------------------------------------------------------------


def parse_inbound(text: str | bytes) -> InboundEvent:
    """One Telnyx text frame to a typed event, or :class:`TelnyxProtocolError`."""
    msg = _load(text)
    event = msg["event"]
    if event == "connected":
        return TelnyxConnected(str(msg.get("version", "1.0.0")))
    if event == "error":
        err = _obj(msg, "payload", event)
        return TelnyxError(
            _int(err, "code", event, 0), str(err.get("title", "")), str(err.get("detail", ""))
        )
    seq = _int(msg, "sequence_number", event, 0)
    if event == "start":
        return _parse_start(msg, seq)
    stream_id = _str(msg, "stream_id", event)
    if event == "media":
        media = _obj(msg, "media", event)
        return TelnyxMedia(
            seq,
            stream_id,
            _payload(media, event),
            _int(media, "chunk", event, 0),
            _int(media, "timestamp", event, 0),
            str(media.get("track", "inbound")),
        )
    if event == "dtmf":
        return TelnyxDtmf(seq, stream_id, _str(_obj(msg, "dtmf", event), "digit", event))
    if event == "mark":
        return TelnyxMark(seq, stream_id, _str(_obj(msg, "mark", event), "name", event))
    if event == "stop":
        stop = msg.get("stop")
        control = stop.get("call_control_id", "") if isinstance(stop, dict) else ""
        return TelnyxStop(seq, stream_id, str(control))
    raise TelnyxProtocolError(f"unknown Telnyx event {event!r}", event)


def _parse_start(msg: dict[str, Any], seq: int) -> TelnyxStart:
    start = _obj(msg, "start", "start")
    fmt = _obj(start, "media_format", "start")
    params = start.get("custom_parameters") or {}
    if not isinstance(params, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in params.items()
    ):
        raise TelnyxProtocolError("start: custom_parameters must map names to strings", "start")
    return TelnyxStart(
        seq,
        _str(msg, "stream_id", "start"),
        _str(start, "call_control_id", "start"),
        _opt_str(start, "from", "start") or "",
        _opt_str(start, "to", "start") or "",
        _opt_str(start, "client_state", "start"),
        MediaFormat(
            _str(fmt, "encoding", "start"),
            _int(fmt, "sample_rate", "start"),
            _int(fmt, "channels", "start", 1),
        ),
        dict(params),
    )


def encode_inbound(event: InboundEvent) -> str:
    """Telnyx's JSON for an inbound event: what the fake Telnyx sends."""
    if isinstance(event, TelnyxConnected):
        return _dump({"event": "connected", "version": event.version})
    if isinstance(event, TelnyxError):
        body = {"code": event.code, "title": event.title, "detail": event.detail}
        return _dump({"event": "error", "payload": body})
    head = {"sequence_number": str(event.sequence_number), "stream_id": event.stream_id}
    if isinstance(event, TelnyxStart):
        fmt = event.media_format
        start = {
            "call_control_id": event.call_control_id,
            "from": event.from_number,
            "to": event.to_number,
            "client_state": event.client_state,
            "custom_parameters": dict(event.custom_parameters),
            "media_format": {
                "encoding": fmt.encoding,
                "sample_rate": fmt.sample_rate,
                "channels": fmt.channels,
            },
        }
        return _dump({"event": "start", **head, "start": start})
    if isinstance(event, TelnyxMedia):
        media = {
            "track": event.track,
            "chunk": str(event.chunk),
            "timestamp": str(event.timestamp_ms),
            "payload": base64.b64encode(event.payload).decode("ascii"),
        }
        return _dump({"event": "media", **head, "media": media})
    if isinstance(event, TelnyxDtmf):
        return _dump({"event": "dtmf", **head, "dtmf": {"digit": event.digit}})
    if isinstance(event, TelnyxMark):
        return _dump({"event": "mark", **head, "mark": {"name": event.name}})
    return _dump({"event": "stop", **head, "stop": {"call_control_id": event.call_control_id}})


# --- us -> Telnyx --------------------------------------------------------------------


def media_message(payload: bytes) -> str:
    return _dump({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})


def mark_message(name: str) -> str:
    return _dump({"event": "mark", "mark": {"name": name}})


def clear_message() -> str:
    return _dump({"event": "clear"})


def parse_outbound(text: str | bytes) -> OutboundEvent:
    """What the fake Telnyx reads from the server; the inverse of the builders."""
    msg = _load(text)
    event = msg["event"]
    if event == "media":
        return OutboundMedia(_payload(_obj(msg, "media", event), event))
    if event == "mark":
        return OutboundMark(_str(_obj(msg, "mark", event), "name", event))
    if event == "clear":
        return OutboundClear()
    raise TelnyxProtocolError(f"unknown outbound Telnyx event {event!r}", event)
