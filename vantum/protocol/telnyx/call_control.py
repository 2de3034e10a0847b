"""Telnyx Call Control v2 request bodies and the ``client_state`` we round-trip (sans-I/O).

A Call Control application gets a ``call.initiated`` webhook for each incoming call
and must act on it through the REST API (``POST /v2/calls/{call_control_id}/actions/
answer``), unlike TwiML where the webhook's response is the instruction. Answering
with ``stream_url`` starts the media stream at once, with no extra round trip;
``stream_bidirectional_mode: "rtp"`` is what lets us speak back (the default
``mp3`` mode plays whole files, one a second).

``client_state`` is an opaque base64 string Telnyx attaches to every later webhook
of the call and to the media stream's ``start`` frame. We put the one-time stream
ticket and the session parameters (``agent``, ``language``, ``voiceId``) in it as
base64 JSON, so the stream is tied to a call our webhook answered, as Twilio's is
through ``<Parameter>``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from .messages import MediaFormat

MAX_CLIENT_STATE = 4096
"""Longer client_state values are not ours (ours are ~200 characters)."""


def encode_client_state(params: Mapping[str, str]) -> str:
    """``params`` as Telnyx's ``client_state``: base64 of compact JSON."""
    raw = json.dumps(dict(params), separators=(",", ":"), sort_keys=True).encode()
    return base64.b64encode(raw).decode("ascii")


def decode_client_state(state: str | None) -> dict[str, str]:
    """Our parameters back from ``client_state``; {} when absent or not ours."""
    if not state or len(state) > MAX_CLIENT_STATE:
        return {}
    try:
        value = json.loads(base64.b64decode(state, validate=True))
    except (binascii.Error, ValueError, RecursionError):
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}


def answer_body(
    stream_url: str,
    client_state: str,
    media_format: MediaFormat | None = None,
    *,
    command_id: str | None = None,
) -> dict[str, Any]:
    """The ``actions/answer`` body that answers and streams both ways at once."""
    fmt = media_format or MediaFormat()
    body: dict[str, Any] = {
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_codec": fmt.encoding,
        "stream_bidirectional_mode": "rtp",
        "stream_bidirectional_codec": fmt.encoding,
        "stream_bidirectional_sampling_rate": fmt.sample_rate,
        "stream_bidirectional_target_legs": "opposite",
        "client_state": client_state,
    }
    if command_id is not None:
        body["command_id"] = command_id
    return body


def transfer_body(to: str) -> dict[str, Any]:
    """``actions/transfer``: bridge the caller to ``to`` (E.164 or ``sip:``)."""
    return {"to": to}


SEND_DTMF_MS = 250
"""Telnyx's default tone length for ``send_dtmf`` (it takes 100-500 ms)."""


def send_dtmf_body(digits: str, duration_millis: int = SEND_DTMF_MS) -> dict[str, Any]:
    """``actions/send_dtmf``: press ``digits`` (0-9, A-D, *, #; ``w`` 0.5 s and ``W``
    1 s pauses), each tone ``duration_millis`` long, played on the call by Telnyx
    itself, so our media stream is untouched."""
    if not 100 <= duration_millis <= 500:
        raise ValueError("Telnyx plays each DTMF digit for 100-500 ms")
    return {"digits": digits, "duration_millis": duration_millis}


def reject_body(cause: str = "USER_BUSY") -> dict[str, Any]:
    """``actions/reject`` for a call we will not take (the caller hears busy)."""
    return {"cause": cause}
