"""What every Twilio Media Streams message shares, for the modules of this package.

Twilio's JSON is loosely typed: numbers arrive as strings (``sequenceNumber``,
``chunk``, ``timestamp``), payloads as base64, and a field can be missing or of
the wrong type on any message. The readers here turn one field into a checked
value or a :class:`TwilioProtocolError` naming the event, so the parsers in
``inbound`` and ``outbound`` read as a list of fields.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ...errors import VantumError

SAMPLE_RATE = 8000
FRAME_BYTES = 160
"""20 ms of 8 kHz mu-law: the frame size Twilio sends and expects."""


class TwilioProtocolError(VantumError):
    """A Twilio media-stream message was malformed or arrived out of order."""

    def __init__(self, message: str, event: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event


def dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def load(text: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TwilioProtocolError(f"Twilio message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise TwilioProtocolError(f"Twilio message must be a JSON object, got {type(msg).__name__}")
    return msg


def event_field(msg: dict[str, Any]) -> str:
    event = msg.get("event")
    if not isinstance(event, str):
        raise TwilioProtocolError(f"Twilio message needs a string 'event' field, got {event!r}")
    return event


def obj_field(msg: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{where}: missing object field {key!r}", where.split(".")[0])
    return value


def str_field(msg: dict[str, Any], key: str, where: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{where}: missing string field {key!r}", where.split(".")[0])
    return value


def int_field(msg: dict[str, Any], key: str, where: str) -> int:
    value = msg.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise TwilioProtocolError(
        f"{where}: field {key!r} must be a non-negative integer, got {value!r}", where.split(".")[0]
    )


def b64_field(media: dict[str, Any], where: str) -> bytes:
    payload = str_field(media, "payload", f"{where}.media")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TwilioProtocolError(f"{where}.media.payload is not base64: {exc}", where) from None
