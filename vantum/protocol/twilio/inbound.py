"""Twilio -> us: the typed events of a media stream, parsed from and encoded to JSON.

Twilio sends ``connected``, ``start``, then ``media`` / ``dtmf`` / ``mark`` and
finally ``stop``. :func:`parse_inbound` is what the phone transport runs on each
text frame; :func:`encode_inbound` is its inverse, for fake carriers and tests.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .wire import (
    SAMPLE_RATE,
    TwilioProtocolError,
    b64_field,
    dump,
    event_field,
    int_field,
    load,
    obj_field,
    str_field,
)


@attrs.frozen
class TwilioConnected:
    protocol: str = "Call"
    version: str = "1.0.0"


@attrs.frozen
class MediaFormat:
    encoding: str = "audio/x-mulaw"
    sample_rate: int = SAMPLE_RATE
    channels: int = 1


@attrs.frozen
class TwilioStart:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str
    tracks: tuple[str, ...] = ("inbound",)
    media_format: MediaFormat = MediaFormat()
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class TwilioMedia:
    sequence_number: int
    stream_sid: str
    payload: bytes
    chunk: int
    timestamp_ms: int
    track: str = "inbound"


@attrs.frozen
class TwilioMark:
    sequence_number: int
    stream_sid: str
    name: str


@attrs.frozen
class TwilioDtmf:
    sequence_number: int
    stream_sid: str
    digit: str
    track: str = "inbound_track"


@attrs.frozen
class TwilioStop:
    sequence_number: int
    stream_sid: str
    account_sid: str
    call_sid: str


InboundEvent = TwilioConnected | TwilioStart | TwilioMedia | TwilioMark | TwilioDtmf | TwilioStop


def parse_inbound(text: str | bytes) -> InboundEvent:
    """One Twilio text frame to a typed event, or :class:`TwilioProtocolError`."""
    msg = load(text)
    event = event_field(msg)
    parser = _INBOUND_PARSERS.get(event)
    if parser is None:
        raise TwilioProtocolError(f"unknown Twilio event {event!r}", event)
    return parser(msg)


def _parse_connected(msg: dict[str, Any]) -> TwilioConnected:
    return TwilioConnected(
        str_field(msg, "protocol", "connected"), str_field(msg, "version", "connected")
    )


def _parse_start(msg: dict[str, Any]) -> TwilioStart:
    start = obj_field(msg, "start", "start")
    sid = str_field(start, "streamSid", "start.start")
    if msg.get("streamSid", sid) != sid:
        raise TwilioProtocolError(
            "start: top-level streamSid differs from start.streamSid", "start"
        )
    fmt = obj_field(start, "mediaFormat", "start.start")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise TwilioProtocolError("start.start.tracks must be a list of strings", "start")
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise TwilioProtocolError("start.start.customParameters must map names to strings", "start")
    media_format = MediaFormat(
        str_field(fmt, "encoding", "start.mediaFormat"),
        int_field(fmt, "sampleRate", "start.mediaFormat"),
        int_field(fmt, "channels", "start.mediaFormat"),
    )
    return TwilioStart(
        int_field(msg, "sequenceNumber", "start"),
        sid,
        str_field(start, "accountSid", "start.start"),
        str_field(start, "callSid", "start.start"),
        tuple(tracks),
        media_format,
        dict(params),
    )


def _parse_media(msg: dict[str, Any]) -> TwilioMedia:
    media = obj_field(msg, "media", "media")
    return TwilioMedia(
        int_field(msg, "sequenceNumber", "media"),
        str_field(msg, "streamSid", "media"),
        b64_field(media, "media"),
        int_field(media, "chunk", "media.media"),
        int_field(media, "timestamp", "media.media"),
        str(media.get("track", "inbound")),
    )


def _parse_mark(msg: dict[str, Any]) -> TwilioMark:
    mark = obj_field(msg, "mark", "mark")
    return TwilioMark(
        int_field(msg, "sequenceNumber", "mark"),
        str_field(msg, "streamSid", "mark"),
        str_field(mark, "name", "mark.mark"),
    )


def _parse_dtmf(msg: dict[str, Any]) -> TwilioDtmf:
    dtmf = obj_field(msg, "dtmf", "dtmf")
    return TwilioDtmf(
        int_field(msg, "sequenceNumber", "dtmf"),
        str_field(msg, "streamSid", "dtmf"),
        str_field(dtmf, "digit", "dtmf.dtmf"),
        str(dtmf.get("track", "inbound_track")),
    )


def _parse_stop(msg: dict[str, Any]) -> TwilioStop:
    stop = obj_field(msg, "stop", "stop")
    return TwilioStop(
        int_field(msg, "sequenceNumber", "stop"),
        str_field(msg, "streamSid", "stop"),
        str_field(stop, "accountSid", "stop.stop"),
        str_field(stop, "callSid", "stop.stop"),
    )


_INBOUND_PARSERS: dict[str, Callable[[dict[str, Any]], InboundEvent]] = {
    "connected": _parse_connected,
    "start": _parse_start,
    "media": _parse_media,
    "mark": _parse_mark,
    "dtmf": _parse_dtmf,
    "stop": _parse_stop,
}


def encode_inbound(event: InboundEvent) -> str:
    """Twilio's JSON for an inbound event: what fake carriers send to the server."""
    if isinstance(event, TwilioConnected):
        return dump({"event": "connected", "protocol": event.protocol, "version": event.version})
    head = {"sequenceNumber": str(event.sequence_number), "streamSid": event.stream_sid}
    if isinstance(event, TwilioStart):
        fmt = event.media_format
        start = {
            "accountSid": event.account_sid,
            "streamSid": event.stream_sid,
            "callSid": event.call_sid,
            "tracks": list(event.tracks),
            "mediaFormat": {
                "encoding": fmt.encoding,
                "sampleRate": fmt.sample_rate,
                "channels": fmt.channels,
            },
            "customParameters": dict(event.custom_parameters),
        }
        return dump({"event": "start", **head, "start": start})
    if isinstance(event, TwilioMedia):
        media = {
            "track": event.track,
            "chunk": str(event.chunk),
            "timestamp": str(event.timestamp_ms),
            "payload": base64.b64encode(event.payload).decode("ascii"),
        }
        return dump({"event": "media", **head, "media": media})
    if isinstance(event, TwilioMark):
        return dump({"event": "mark", **head, "mark": {"name": event.name}})
    if isinstance(event, TwilioDtmf):
        return dump({"event": "dtmf", **head, "dtmf": {"track": event.track, "digit": event.digit}})
    stop = {"accountSid": event.account_sid, "callSid": event.call_sid}
    return dump({"event": "stop", **head, "stop": stop})
