"""Us -> Twilio: the ``media``, ``mark`` and ``clear`` messages we send.

The builders are what the server sends; :func:`parse_outbound` is their inverse,
what a fake Twilio reads from the server.
"""

from __future__ import annotations

import base64

import attrs

from .wire import TwilioProtocolError, b64_field, dump, event_field, load, obj_field, str_field


@attrs.frozen
class OutboundMedia:
    stream_sid: str
    payload: bytes


@attrs.frozen
class OutboundMark:
    stream_sid: str
    name: str


@attrs.frozen
class OutboundClear:
    stream_sid: str


OutboundEvent = OutboundMedia | OutboundMark | OutboundClear


def media_message(stream_sid: str, ulaw: bytes) -> str:
    payload = base64.b64encode(ulaw).decode("ascii")
    return dump({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark_message(stream_sid: str, name: str) -> str:
    return dump({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return dump({"event": "clear", "streamSid": stream_sid})


def parse_outbound(text: str | bytes) -> OutboundEvent:
    """What a fake Twilio reads from the server; the inverse of the builders."""
    msg = load(text)
    event = event_field(msg)
    if event == "media":
        return OutboundMedia(
            str_field(msg, "streamSid", "media"),
            b64_field(obj_field(msg, "media", "media"), "media"),
        )
    if event == "mark":
        name = str_field(obj_field(msg, "mark", "mark"), "name", "mark.mark")
        return OutboundMark(str_field(msg, "streamSid", "mark"), name)
    if event == "clear":
        return OutboundClear(str_field(msg, "streamSid", "clear"))
    raise TwilioProtocolError(f"unknown outbound Twilio event {event!r}", event)
