"""Twilio Media Streams (bidirectional ``<Connect><Stream>``), sans-I/O.

The phone transport feeds WebSocket text frames to :func:`parse_inbound` (or a
:class:`TwilioSerializer`) and sends what the builders return; nothing here
touches a socket, so hypothesis drives every rule directly. The wire format
(see docs/provider-protocols.md): Twilio sends ``connected``, ``start``, then
``media`` / ``dtmf`` / ``mark`` and finally ``stop``; we send ``media``, ``mark``
and ``clear``. Numbers Twilio sends as strings (``sequenceNumber``, ``chunk``,
``timestamp``) become ints; payloads become raw mu-law bytes. Mark echoes tell
us what the caller actually heard (``state``).

One concept per module: ``wire`` (the error, the frame constants, the JSON field
readers every message shares), ``inbound`` and ``outbound`` (each direction's
messages), ``framing`` (20 ms audio frames), ``state`` (order rules and mark
accounting), ``carrier`` (carrier-neutral events and the serializer protocol),
``serializer`` (Twilio's serializer), ``twiml`` (the webhook answer), ``ticket``
(the one-time parameter that ties a stream to a call we answered) and ``dialing``
(outbound calls: the ``Calls.json`` request and AMD verdicts). Import from the
package: the names re-exported here are its public surface.
"""

from __future__ import annotations

from .carrier import AudioIn, CarrierEvent, DtmfIn, Mark, MediaStreamSerializer, Start, Stop
from .framing import frame_audio, pad_frame
from .inbound import (
    InboundEvent,
    MediaFormat,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioStart,
    TwilioStop,
    encode_inbound,
    parse_inbound,
)
from .outbound import (
    OutboundClear,
    OutboundEvent,
    OutboundMark,
    OutboundMedia,
    clear_message,
    mark_message,
    media_message,
    parse_outbound,
)
from .serializer import TwilioSerializer
from .state import Phase, TwilioStreamState
from .ticket import (
    TICKET_PARAMETER,
    StreamTickets,
    TicketError,
    TicketFailure,
    UsedTickets,
    derive_key,
    issue_ticket,
    verify_ticket,
)
from .twiml import connect_stream_twiml
from .wire import FRAME_BYTES, SAMPLE_RATE, TwilioProtocolError

__all__ = [
    "FRAME_BYTES",
    "SAMPLE_RATE",
    "TICKET_PARAMETER",
    "AudioIn",
    "CarrierEvent",
    "DtmfIn",
    "InboundEvent",
    "Mark",
    "MediaFormat",
    "MediaStreamSerializer",
    "OutboundClear",
    "OutboundEvent",
    "OutboundMark",
    "OutboundMedia",
    "Phase",
    "Start",
    "Stop",
    "StreamTickets",
    "TicketError",
    "TicketFailure",
    "TwilioConnected",
    "TwilioDtmf",
    "TwilioMark",
    "TwilioMedia",
    "TwilioProtocolError",
    "TwilioSerializer",
    "TwilioStart",
    "TwilioStop",
    "TwilioStreamState",
    "UsedTickets",
    "clear_message",
    "connect_stream_twiml",
    "derive_key",
    "encode_inbound",
    "frame_audio",
    "issue_ticket",
    "mark_message",
    "media_message",
    "pad_frame",
    "parse_inbound",
    "parse_outbound",
    "verify_ticket",
]
