"""``vantum dial``: place one outbound call from the command line.

It builds the same ``Calls.json`` request the server's dialer does
(``vantum.protocol.twilio.dialing``) and posts it with this process's Twilio
credentials; the call then belongs to the running server at ``VANTUM_PUBLIC_URL``:
Twilio fetches its ``/twilio/voice``, streams to it, and posts the status and AMD
callbacks there (the server opens the dial's record at the first status). The rate
limit and concurrency cap are the server dialer's, for calls it places itself.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from .config import Config
from .errors import ConfigError
from .protocol.twilio.dialing import DialRequest
from .transports.twilio_dial import OutboundDialer


async def run_dial(
    config: Config,
    to: str,
    from_: str,
    agent: str | None,
    variables: Mapping[str, str],
    amd: bool = True,
) -> str:
    """Place the call; return one line of JSON: ``{"dialId", "callSid", "status"}``."""
    if not config.public_url:
        raise ConfigError(
            "vantum dial needs VANTUM_PUBLIC_URL: the public https:// address of the "
            "server that will answer the call"
        )
    try:
        request = DialRequest(to, from_, agent, dict(variables), amd=amd)
    except ValueError as exc:
        raise ConfigError(f"vantum dial: {exc}") from None
    result = await OutboundDialer(config).dial(request, config.public_url)
    return json.dumps(
        {"dialId": result.dial_id, "callSid": result.call_sid, "status": result.status}
    )
