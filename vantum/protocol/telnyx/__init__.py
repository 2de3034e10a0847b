"""Telnyx media streaming and Call Control, sans-I/O.

``messages`` (the WebSocket frames both ways), ``serializer`` (the carrier seam's
:class:`~vantum.protocol.twilio.carrier.MediaStreamSerializer` for Telnyx, codecs
PCMU/PCMA/L16 inside), ``call_control`` (REST request bodies and the
``client_state`` that carries the one-time stream ticket) and ``webhook`` (Ed25519
webhook signatures). The transport and routes are ``vantum/transports/telnyx_*.py``.
"""

from __future__ import annotations

from .call_control import answer_body, decode_client_state, encode_client_state
from .messages import (
    InboundEvent,
    MediaFormat,
    OutboundClear,
    OutboundEvent,
    OutboundMark,
    OutboundMedia,
    TelnyxConnected,
    TelnyxDtmf,
    TelnyxError,
    TelnyxMark,
    TelnyxMedia,
    TelnyxProtocolError,
    TelnyxStart,
    TelnyxStop,
    encode_inbound,
    parse_inbound,
    parse_outbound,
)
from .serializer import TelnyxSerializer, decode_audio, encode_audio

__all__ = [
    "InboundEvent",
    "MediaFormat",
    "OutboundClear",
    "OutboundEvent",
    "OutboundMark",
    "OutboundMedia",
    "TelnyxConnected",
    "TelnyxDtmf",
    "TelnyxError",
    "TelnyxMark",
    "TelnyxMedia",
    "TelnyxProtocolError",
    "TelnyxSerializer",
    "TelnyxStart",
    "TelnyxStop",
    "answer_body",
    "decode_audio",
    "decode_client_state",
    "encode_audio",
    "encode_client_state",
    "encode_inbound",
    "parse_inbound",
    "parse_outbound",
]
