"""Telnyx's :class:`~vantum.protocol.twilio.carrier.MediaStreamSerializer`.

The phone transport is carrier-neutral; this is all Telnyx needs: parse a frame into
a carrier event, build ``media``/``mark``/``clear`` and keep the codec inside. The
codec is the one our answer asked for (``stream_codec`` and
``stream_bidirectional_codec``, see ``call_control``): PCMU or PCMA at 8 kHz, or
L16 (big-endian, RFC 2586) at 8 or 16 kHz. A ``start`` announcing another format
is refused as unusable, as Twilio's is: the transport's frame size is fixed by then.

Mark echoes are accounted for exactly as Twilio's (Telnyx too returns a mark once
the audio before it played, and returns queued marks at once after ``clear``), so
the Twilio mark ledger is reused: what the caller heard after a barge-in follows
the carrier, not the server clock.
"""

from __future__ import annotations

import numpy as np

from .. import alaw, mulaw
from ..twilio.carrier import AudioIn, CarrierEvent, DtmfIn, Mark, Start, Stop
from ..twilio.state import TwilioStreamState
from .call_control import decode_client_state
from .messages import (
    MediaFormat,
    TelnyxDtmf,
    TelnyxError,
    TelnyxMark,
    TelnyxMedia,
    TelnyxProtocolError,
    TelnyxStart,
    TelnyxStop,
    clear_message,
    mark_message,
    media_message,
    parse_inbound,
)

SUPPORTED = {("PCMU", 8000), ("PCMA", 8000), ("L16", 8000), ("L16", 16000)}
"""Encodings and rates this serializer speaks (the transport needs PCM16 both ways)."""


def encode_audio(fmt: MediaFormat, pcm16: bytes) -> bytes:
    """PCM16LE to the wire codec of ``fmt``."""
    if fmt.encoding == "PCMU":
        return mulaw.encode(pcm16)
    if fmt.encoding == "PCMA":
        return alaw.encode(pcm16)
    return np.frombuffer(pcm16, dtype="<i2").astype(">i2").tobytes()


def decode_audio(fmt: MediaFormat, payload: bytes) -> bytes:
    """The wire codec of ``fmt`` to PCM16LE; raises ValueError for an odd L16 payload."""
    if fmt.encoding == "PCMU":
        return mulaw.decode(payload)
    if fmt.encoding == "PCMA":
        return alaw.decode(payload)
    if len(payload) % 2:
        raise ValueError(f"L16 payload of {len(payload)} bytes is not whole samples")
    return np.frombuffer(payload, dtype=">i2").astype("<i2").tobytes()


class TelnyxSerializer:
    """:class:`MediaStreamSerializer` for Telnyx media streaming (bidirectional ``rtp``)."""

    def __init__(self, media_format: MediaFormat | None = None) -> None:
        self.media_format = media_format or MediaFormat()
        key = (self.media_format.encoding, self.media_format.sample_rate)
        if key not in SUPPORTED or self.media_format.channels != 1:
            raise ValueError(f"unsupported Telnyx media format {self.media_format}")
        self.stream_id: str | None = None
        self.stopped = False
        self.error: TelnyxError | None = None
        """The last ``error`` frame Telnyx sent (logged by the transport as a skip)."""
        self.marks = TwilioStreamState()
        """Only its mark ledger is used (``mark_sent``/``mark_received``/``clear``)."""
        self._unmarked_samples = 0

    @property
    def sample_rate(self) -> int:
        return self.media_format.sample_rate

    def parse(self, message: str | bytes) -> CarrierEvent | None:
        event = parse_inbound(message)
        if self.stopped:
            raise TelnyxProtocolError(f"{type(event).__name__} after stop", "stop")
        if isinstance(event, TelnyxStart):
            return self._start(event)
        if isinstance(event, TelnyxError):
            self.error = event
            raise TelnyxProtocolError(
                f"Telnyx reported error {event.code}: {event.title} {event.detail}".strip(),
                "error",
            )
        if not isinstance(event, TelnyxMedia | TelnyxDtmf | TelnyxMark | TelnyxStop):
            return None  # connected
        name = type(event).__name__.removeprefix("Telnyx").lower()
        if self.stream_id is None:
            raise TelnyxProtocolError(f"{name} before start", name)
        if event.stream_id != self.stream_id:
            raise TelnyxProtocolError(
                f"{name} for stream_id {event.stream_id!r}, expected {self.stream_id!r}", name
            )
        if isinstance(event, TelnyxMedia):
            if event.track != "inbound":
                return None
            return AudioIn(decode_audio(self.media_format, event.payload), event.timestamp_ms)
        if isinstance(event, TelnyxDtmf):
            return DtmfIn(event.digit)
        if isinstance(event, TelnyxMark):
            cleared = event.name in self.marks.cleared_marks
            self.marks.mark_received(event.name)
            return Mark(event.name, self.marks.played_ms, cleared)
        self.stopped = True
        return Stop("stop")

    def _start(self, event: TelnyxStart) -> Start:
        if self.stream_id is not None:
            raise TelnyxProtocolError("start received twice", "start")
        if event.media_format != self.media_format:
            raise TelnyxProtocolError(
                f"unsupported Telnyx media format {event.media_format} "
                f"(this stream was answered for {self.media_format})",
                "start",
            )
        self.stream_id = event.stream_id
        params = dict(event.custom_parameters)
        params.update(decode_client_state(event.client_state))
        # Who is calling comes from Telnyx, never from state we (or anyone) passed along.
        params.update(
            {k: v for k, v in (("From", event.from_number), ("To", event.to_number)) if v}
        )
        return Start(event.stream_id, event.call_control_id, self.sample_rate, params)

    def serialize_audio(self, pcm16: bytes) -> str:
        self._unmarked_samples += len(pcm16) // 2
        return media_message(encode_audio(self.media_format, pcm16))

    def serialize_mark(self, name: str) -> str:
        per_ms = self.sample_rate // 1000
        audio_ms, self._unmarked_samples = divmod(self._unmarked_samples, per_ms)
        self.marks.mark_sent(name, audio_ms)
        return mark_message(name)

    def serialize_clear(self) -> str:
        self.marks.clear()
        self._unmarked_samples = 0
        return clear_message()
