"""Twilio Media Streams (bidirectional ``<Connect><Stream>``), sans-I/O.

The phone transport feeds WebSocket text frames to :func:`parse_inbound` (or a
:class:`TwilioSerializer`) and sends what the builders return; nothing here
touches a socket, so hypothesis drives every rule directly. The wire format
(see docs/provider-protocols.md): Twilio sends ``connected``, ``start``, then
``media`` / ``dtmf`` / ``mark`` and finally ``stop``; we send ``media``, ``mark``
and ``clear``. Numbers Twilio sends as strings (``sequenceNumber``, ``chunk``,
``timestamp``) become ints; payloads become raw mu-law bytes.

Marks are how we learn what the caller actually heard: Twilio echoes a mark once
the audio queued before it has played, and echoes every pending mark at once
after a ``clear`` (that audio was dropped, not played). :class:`TwilioStreamState`
turns those echoes into a played position, which barge-in uses to cut the
assistant's transcript at what was really said.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

import attrs

from ..errors import VantumError
from . import mulaw

SAMPLE_RATE = 8000
FRAME_BYTES = 160
"""20 ms of 8 kHz mu-law: the frame size Twilio sends and expects."""


class TwilioProtocolError(VantumError):
    """A Twilio media-stream message was malformed or arrived out of order."""

    def __init__(self, message: str, event: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.event = event


# --- Inbound (Twilio -> us) ---------------------------------------------------


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
    msg = _load(text)
    event = _event_field(msg)
    parser = _INBOUND_PARSERS.get(event)
    if parser is None:
        raise TwilioProtocolError(f"unknown Twilio event {event!r}", event)
    return parser(msg)


def _parse_connected(msg: dict[str, Any]) -> TwilioConnected:
    return TwilioConnected(_str(msg, "protocol", "connected"), _str(msg, "version", "connected"))


def _parse_start(msg: dict[str, Any]) -> TwilioStart:
    start = _obj(msg, "start", "start")
    sid = _str(start, "streamSid", "start.start")
    if msg.get("streamSid", sid) != sid:
        raise TwilioProtocolError(
            "start: top-level streamSid differs from start.streamSid", "start"
        )
    fmt = _obj(start, "mediaFormat", "start.start")
    tracks = start.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise TwilioProtocolError("start.start.tracks must be a list of strings", "start")
    params = start.get("customParameters", {})
    if not isinstance(params, dict) or not all(isinstance(v, str) for v in params.values()):
        raise TwilioProtocolError("start.start.customParameters must map names to strings", "start")
    media_format = MediaFormat(
        _str(fmt, "encoding", "start.mediaFormat"),
        _int(fmt, "sampleRate", "start.mediaFormat"),
        _int(fmt, "channels", "start.mediaFormat"),
    )
    return TwilioStart(
        _int(msg, "sequenceNumber", "start"),
        sid,
        _str(start, "accountSid", "start.start"),
        _str(start, "callSid", "start.start"),
        tuple(tracks),
        media_format,
        dict(params),
    )


def _parse_media(msg: dict[str, Any]) -> TwilioMedia:
    media = _obj(msg, "media", "media")
    return TwilioMedia(
        _int(msg, "sequenceNumber", "media"),
        _str(msg, "streamSid", "media"),
        _b64(media, "media"),
        _int(media, "chunk", "media.media"),
        _int(media, "timestamp", "media.media"),
        str(media.get("track", "inbound")),
    )


def _parse_mark(msg: dict[str, Any]) -> TwilioMark:
    mark = _obj(msg, "mark", "mark")
    return TwilioMark(
        _int(msg, "sequenceNumber", "mark"),
        _str(msg, "streamSid", "mark"),
        _str(mark, "name", "mark.mark"),
    )


def _parse_dtmf(msg: dict[str, Any]) -> TwilioDtmf:
    dtmf = _obj(msg, "dtmf", "dtmf")
    return TwilioDtmf(
        _int(msg, "sequenceNumber", "dtmf"),
        _str(msg, "streamSid", "dtmf"),
        _str(dtmf, "digit", "dtmf.dtmf"),
        str(dtmf.get("track", "inbound_track")),
    )


def _parse_stop(msg: dict[str, Any]) -> TwilioStop:
    stop = _obj(msg, "stop", "stop")
    return TwilioStop(
        _int(msg, "sequenceNumber", "stop"),
        _str(msg, "streamSid", "stop"),
        _str(stop, "accountSid", "stop.stop"),
        _str(stop, "callSid", "stop.stop"),
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
        return _dump({"event": "connected", "protocol": event.protocol, "version": event.version})
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
        return _dump({"event": "start", **head, "start": start})
    if isinstance(event, TwilioMedia):
        media = {
            "track": event.track,
            "chunk": str(event.chunk),
            "timestamp": str(event.timestamp_ms),
            "payload": base64.b64encode(event.payload).decode("ascii"),
        }
        return _dump({"event": "media", **head, "media": media})
    if isinstance(event, TwilioMark):
        return _dump({"event": "mark", **head, "mark": {"name": event.name}})
    if isinstance(event, TwilioDtmf):
        return _dump(
            {"event": "dtmf", **head, "dtmf": {"track": event.track, "digit": event.digit}}
        )
    stop = {"accountSid": event.account_sid, "callSid": event.call_sid}
    return _dump({"event": "stop", **head, "stop": stop})


# --- Outbound (us -> Twilio) --------------------------------------------------


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
    return _dump({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark_message(stream_sid: str, name: str) -> str:
    return _dump({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear_message(stream_sid: str) -> str:
    return _dump({"event": "clear", "streamSid": stream_sid})


def parse_outbound(text: str | bytes) -> OutboundEvent:
    """What a fake Twilio reads from the server; the inverse of the builders."""
    msg = _load(text)
    event = _event_field(msg)
    if event == "media":
        return OutboundMedia(
            _str(msg, "streamSid", "media"), _b64(_obj(msg, "media", "media"), "media")
        )
    if event == "mark":
        name = _str(_obj(msg, "mark", "mark"), "name", "mark.mark")
        return OutboundMark(_str(msg, "streamSid", "mark"), name)
    if event == "clear":
        return OutboundClear(_str(msg, "streamSid", "clear"))
    raise TwilioProtocolError(f"unknown outbound Twilio event {event!r}", event)


def frame_audio(
    ulaw: bytes, frame_bytes: int = FRAME_BYTES, carry: bytes = b""
) -> tuple[list[bytes], bytes]:
    """Cut ``carry + ulaw`` into whole frames; return them and the new carry.

    TTS chunks rarely end on a 20 ms boundary; keeping the remainder for the next
    call means every frame we send, and pace, is exactly one frame long.
    """
    if frame_bytes <= 0:
        raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
    data = carry + ulaw
    whole = len(data) - len(data) % frame_bytes
    frames = [data[i : i + frame_bytes] for i in range(0, whole, frame_bytes)]
    return frames, data[whole:]


def pad_frame(carry: bytes, frame_bytes: int = FRAME_BYTES) -> bytes:
    """The last partial frame padded with mu-law silence (empty stays empty)."""
    return carry + mulaw.silence(-len(carry) % frame_bytes)


# --- Stream state ---------------------------------------------------------------


class Phase(enum.Enum):
    NEW = "new"
    CONNECTED = "connected"
    STARTED = "started"
    STOPPED = "stopped"


class TwilioStreamState:
    """Checks inbound order and streamSid, and turns mark echoes into played audio.

    ``mark_sent(name, audio_ms)`` records a mark placed after ``audio_ms`` of audio
    queued since the previous mark (or since start / the last clear). When Twilio
    echoes it, that audio has played. After :meth:`clear` the pending marks come
    back too, but their audio was dropped, so they add nothing: ``played_ms``
    never decreases and never counts cleared audio. (A mark whose echo was already
    in flight when we cleared is counted as cleared: the estimate errs low.)
    """

    def __init__(self) -> None:
        self.phase = Phase.NEW
        self.start: TwilioStart | None = None
        self.last_sequence_number = 0
        self._pending: dict[str, int] = {}  # insertion-ordered: name -> audio_ms
        self._cleared: set[str] = set()
        self._played_ms = 0

    @property
    def stream_sid(self) -> str:
        if self.start is None:
            raise TwilioProtocolError("no Twilio stream has started yet")
        return self.start.stream_sid

    @property
    def played_ms(self) -> int:
        return self._played_ms

    @property
    def pending_ms(self) -> int:
        """Audio sent before a mark that Twilio has not confirmed as played yet."""
        return sum(self._pending.values())

    @property
    def pending_marks(self) -> tuple[str, ...]:
        return tuple(self._pending)

    @property
    def cleared_marks(self) -> frozenset[str]:
        return frozenset(self._cleared)

    def receive(self, event: InboundEvent) -> InboundEvent:
        """Validate ``event`` against the stream so far; account for marks."""
        if isinstance(event, TwilioConnected):
            if self.phase is not Phase.NEW:
                raise TwilioProtocolError("connected received twice or after start", "connected")
            self.phase = Phase.CONNECTED
            return event
        name = _event_name(event)
        if self.phase is Phase.STOPPED:
            raise TwilioProtocolError(f"{name} received after stop", name)
        if isinstance(event, TwilioStart):
            if self.phase is Phase.STARTED:
                raise TwilioProtocolError("start received twice", name)
            self.start = event
            self.phase = Phase.STARTED
        elif self.phase is not Phase.STARTED:
            raise TwilioProtocolError(f"{name} received before start", name)
        elif event.stream_sid != self.stream_sid:
            raise TwilioProtocolError(
                f"{name} for streamSid {event.stream_sid!r}, expected {self.stream_sid!r}", name
            )
        if event.sequence_number <= self.last_sequence_number:
            raise TwilioProtocolError(
                f"{name} sequenceNumber {event.sequence_number} does not follow "
                f"{self.last_sequence_number}",
                name,
            )
        self.last_sequence_number = event.sequence_number
        if isinstance(event, TwilioMark):
            self.mark_received(event.name)
        elif isinstance(event, TwilioStop):
            self.phase = Phase.STOPPED
        return event

    def mark_sent(self, name: str, audio_ms: int) -> None:
        if audio_ms < 0:
            raise ValueError(f"audio_ms must not be negative, got {audio_ms}")
        if name in self._pending or name in self._cleared:
            raise ValueError(f"mark {name!r} is already outstanding")
        self._pending[name] = audio_ms

    def mark_received(self, name: str) -> int:
        """Account for an echoed mark; return the played position in ms."""
        if name in self._cleared:
            self._cleared.discard(name)
            return self._played_ms
        if not self._pending:
            raise TwilioProtocolError(f"mark {name!r} was never sent", "mark")
        oldest = next(iter(self._pending))
        if name != oldest:
            known = (
                "was never sent" if name not in self._pending else f"came back before {oldest!r}"
            )
            raise TwilioProtocolError(f"mark {name!r} {known}", "mark")
        self._played_ms += self._pending.pop(name)
        return self._played_ms

    def clear(self) -> None:
        """Record that we sent ``clear``: queued audio is dropped, pending marks return."""
        self._cleared.update(self._pending)
        self._pending.clear()


def _event_name(event: InboundEvent) -> str:
    return {
        TwilioStart: "start",
        TwilioMedia: "media",
        TwilioMark: "mark",
        TwilioDtmf: "dtmf",
        TwilioStop: "stop",
    }.get(type(event), "connected")


# --- Carrier-neutral serializer ---------------------------------------------------


@attrs.frozen
class Start:
    stream_id: str
    call_id: str
    sample_rate: int
    custom_parameters: Mapping[str, str] = attrs.field(factory=dict, hash=False)


@attrs.frozen
class AudioIn:
    pcm16: bytes
    timestamp_ms: int | None = None


@attrs.frozen
class DtmfIn:
    digit: str


@attrs.frozen
class Mark:
    name: str
    played_ms: int
    cleared: bool = False


@attrs.frozen
class Stop:
    reason: str = ""


CarrierEvent = Start | AudioIn | DtmfIn | Mark | Stop


@runtime_checkable
class MediaStreamSerializer(Protocol):
    """What each carrier (Twilio, Telnyx, Plivo, Vonage...) implements.

    Audio is PCM16LE at ``sample_rate`` in both directions, so the transport never
    knows the carrier's codec. ``parse`` returns None for frames that carry
    nothing for the pipeline (handshakes, other tracks); outbound frames are text
    or binary, as the carrier wants.
    """

    @property
    def sample_rate(self) -> int: ...

    def parse(self, message: str | bytes) -> CarrierEvent | None: ...

    def serialize_audio(self, pcm16: bytes) -> str | bytes: ...

    def serialize_mark(self, name: str) -> str | bytes: ...

    def serialize_clear(self) -> str | bytes: ...


class TwilioSerializer:
    """:class:`MediaStreamSerializer` for Twilio; counts outbound audio between marks."""

    def __init__(self) -> None:
        self.state = TwilioStreamState()
        self._unmarked_samples = 0

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    def parse(self, message: str | bytes) -> CarrierEvent | None:
        event = parse_inbound(message)
        cleared = isinstance(event, TwilioMark) and event.name in self.state.cleared_marks
        self.state.receive(event)
        if isinstance(event, TwilioStart):
            fmt = event.media_format
            if (fmt.encoding, fmt.sample_rate, fmt.channels) != ("audio/x-mulaw", SAMPLE_RATE, 1):
                raise TwilioProtocolError(f"unsupported Twilio media format {fmt}", "start")
            return Start(event.stream_sid, event.call_sid, SAMPLE_RATE, event.custom_parameters)
        if isinstance(event, TwilioMedia):
            if event.track not in ("inbound", "inbound_track"):
                return None
            return AudioIn(mulaw.decode(event.payload), event.timestamp_ms)
        if isinstance(event, TwilioDtmf):
            return DtmfIn(event.digit)
        if isinstance(event, TwilioMark):
            return Mark(event.name, self.state.played_ms, cleared)
        if isinstance(event, TwilioStop):
            return Stop("stop")
        return None

    def serialize_audio(self, pcm16: bytes) -> str:
        ulaw = mulaw.encode(pcm16)
        self._unmarked_samples += len(ulaw)
        return media_message(self.state.stream_sid, ulaw)

    def serialize_mark(self, name: str) -> str:
        # Whole ms go to this mark; the sub-ms remainder carries, so no drift.
        per_ms = SAMPLE_RATE // 1000
        audio_ms, self._unmarked_samples = divmod(self._unmarked_samples, per_ms)
        self.state.mark_sent(name, audio_ms)
        return mark_message(self.state.stream_sid, name)

    def serialize_clear(self) -> str:
        self.state.clear()
        self._unmarked_samples = 0
        return clear_message(self.state.stream_sid)


# --- TwiML ---------------------------------------------------------------------

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def connect_stream_twiml(stream_url: str, parameters: Mapping[str, str] | None = None) -> str:
    """The voice-webhook answer that opens a bidirectional stream to ``stream_url``.

    Built with ElementTree so URLs and parameter values are escaped, not spliced.
    """
    if not stream_url.startswith(("wss://", "ws://")):
        raise ValueError(f"stream URL must be ws:// or wss://, got {stream_url!r}")
    params = dict(parameters or {})
    for text in (stream_url, *params, *params.values()):
        if _XML_INVALID.search(text):
            raise ValueError(f"{text!r} contains a character XML cannot carry")
    response = ET.Element("Response")
    stream = ET.SubElement(ET.SubElement(response, "Connect"), "Stream", {"url": stream_url})
    for name, value in params.items():
        ET.SubElement(stream, "Parameter", {"name": name, "value": value})
    return '<?xml version="1.0" encoding="UTF-8"?>' + ET.tostring(response, encoding="unicode")


# --- JSON helpers ----------------------------------------------------------------


def _dump(obj: dict[str, Any]) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _load(text: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise TwilioProtocolError(f"Twilio message is not valid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise TwilioProtocolError(f"Twilio message must be a JSON object, got {type(msg).__name__}")
    return msg


def _event_field(msg: dict[str, Any]) -> str:
    event = msg.get("event")
    if not isinstance(event, str):
        raise TwilioProtocolError(f"Twilio message needs a string 'event' field, got {event!r}")
    return event


def _obj(msg: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise TwilioProtocolError(f"{where}: missing object field {key!r}", where.split(".")[0])
    return value


def _str(msg: dict[str, Any], key: str, where: str) -> str:
    value = msg.get(key)
    if not isinstance(value, str):
        raise TwilioProtocolError(f"{where}: missing string field {key!r}", where.split(".")[0])
    return value


def _int(msg: dict[str, Any], key: str, where: str) -> int:
    value = msg.get(key)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 18:
        return int(value)
    raise TwilioProtocolError(
        f"{where}: field {key!r} must be a non-negative integer, got {value!r}", where.split(".")[0]
    )


def _b64(media: dict[str, Any], where: str) -> bytes:
    payload = _str(media, "payload", f"{where}.media")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise TwilioProtocolError(f"{where}.media.payload is not base64: {exc}", where) from None
