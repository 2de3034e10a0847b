"""The carrier-neutral side of a phone media stream: events and the serializer protocol.

The phone transport (vantum/transports/twilio_ws.py) speaks only these, so
another carrier (Telnyx, Plivo, Vonage...) needs a serializer, not a transport.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs


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
