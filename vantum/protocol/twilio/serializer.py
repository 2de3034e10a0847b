"""Twilio's :class:`~.carrier.MediaStreamSerializer`: mu-law JSON frames <-> PCM16.

It joins the parts of this package: parse and validate an inbound frame (``inbound``,
``state``), hand the transport a carrier-neutral event, and build outbound
messages while counting the audio each mark covers.
"""

from __future__ import annotations

from .. import mulaw
from .carrier import AudioIn, CarrierEvent, DtmfIn, Mark, Start, Stop
from .inbound import TwilioDtmf, TwilioMark, TwilioMedia, TwilioStart, TwilioStop, parse_inbound
from .outbound import clear_message, mark_message, media_message
from .state import TwilioStreamState
from .wire import SAMPLE_RATE, TwilioProtocolError


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
