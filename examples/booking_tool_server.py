"""The booking agent's HTTP tool server (examples/agents.toml: ``lookup_booking``).

A tool endpoint is any HTTP server that takes Vantum's signed POST and answers JSON.
This one checks the signature (``X-Vantum-Signature``, HMAC-SHA256 over
``"<t>." + body`` with ``VANTUM_TOOL_SECRET``), then looks the surname up::

    VANTUM_TOOL_SECRET=change-me python examples/booking_tool_server.py   # :9100
    VANTUM_TOOL_SECRET=change-me vantum serve --agents examples/agents.toml

Request body: ``{"callId": ..., "toolCallId": ..., "tool": "lookup_booking",
"arguments": {"surname": "Smith"}}``. Whatever JSON a 2xx response carries is what
the model reads; any other status (or a timeout) is a failed call the model is told
about, so it can say "I can't reach the booking system" instead of going silent.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import trio

from vantum.asgi import read_body, serve_app, serve_lifespan
from vantum.tools.signing import SIGNATURE_HEADER, verify

BOOKINGS = {"smith": "Friday 12 June, two nights, sea view", "jones": "Saturday, one night"}
SECRET = os.environ.get("VANTUM_TOOL_SECRET", "").encode()


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    body = (await read_body(receive)) or b""
    headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
    status, answer = 200, {}
    if not verify(SECRET, headers.get(SIGNATURE_HEADER.lower(), ""), body, time.time()):
        status, answer = 401, {"error": "bad signature"}
    elif scope["path"] != "/tools/lookup_booking":
        status, answer = 404, {"error": "no such tool"}
    else:
        surname = str(json.loads(body)["arguments"].get("surname", "")).strip().lower()
        booking = BOOKINGS.get(surname)
        answer = {"found": booking is not None, "booking": booking}
    data = json.dumps(answer).encode()
    headers_out = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers_out})
    await send({"type": "http.response.body", "body": data})


async def main() -> None:
    if not SECRET:
        raise SystemExit("set VANTUM_TOOL_SECRET (the same value as the server's)")
    async with serve_app(app, "127.0.0.1", 9100) as url:
        print(f"booking tools on {url}/tools/lookup_booking", flush=True)
        await trio.sleep_forever()


if __name__ == "__main__":
    trio.run(main)
