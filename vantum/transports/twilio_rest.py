"""Ending and transferring phone calls through Twilio's REST API.

A media stream cannot hang up or transfer the call it belongs to: closing the
WebSocket only ends the stream, and Twilio then carries on with whatever TwiML
follows ``<Connect>``. Both are updates of the Call resource instead
(``POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json``), with
``Status=completed`` to hang up or new ``Twiml`` to redirect the live call.

``api_base`` is configurable so tests point it at
:func:`vantum.testing.fake_twilio.serve_fake_twilio_rest`.

Usage::

    rest = TwilioREST.from_config(config)
    await rest.hang_up(transport.call_id)
    await rest.transfer(call_sid, "+14155550100")
"""

from __future__ import annotations

import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from ..config import Config
from ..errors import ConfigError, VantumError

CALL_SID = re.compile(r"CA[0-9a-fA-F]{32}")
ACCOUNT_SID = re.compile(r"AC[0-9a-fA-F]{32}")
PHONE_NUMBER = re.compile(r"\+?[0-9]{3,15}")
SIP_URI = re.compile(r"sips?:[^\s<>\"']{3,250}")


class TwilioAPIError(VantumError):
    """Twilio refused a REST request (``status`` set) or could not be reached (None).

    ``code`` is Twilio's error code (e.g. 20404 for an unknown call, 21220 for a
    call that is no longer in progress); ``more_info`` links Twilio's explanation.
    """

    def __init__(
        self,
        message: str,
        status: int | None = None,
        code: int | None = None,
        more_info: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.more_info = more_info


class TwilioREST:
    """A small client for the Call resource; one instance can serve many calls."""

    def __init__(
        self,
        account_sid: str,
        auth_token: str,
        api_base: str = "https://api.twilio.com",
        *,
        timeout: float = 10.0,
    ) -> None:
        if not ACCOUNT_SID.fullmatch(account_sid):
            raise ConfigError(f"Twilio account SID {account_sid!r} should look like AC + 32 hex")
        if not auth_token:
            raise ConfigError("a Twilio auth token is required for REST calls")
        self.account_sid = account_sid
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self._auth = httpx.BasicAuth(account_sid, auth_token)

    @classmethod
    def from_config(cls, config: Config) -> TwilioREST:
        if not config.twilio_account_sid or not config.twilio_auth_token:
            raise ConfigError(
                "hang-up and transfer need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN to be set"
            )
        return cls(config.twilio_account_sid, config.twilio_auth_token, config.twilio_api_base)

    def call_url(self, call_sid: str) -> str:
        if not CALL_SID.fullmatch(call_sid):
            raise ValueError(f"call SID {call_sid!r} should look like CA + 32 hex")
        return f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Calls/{call_sid}.json"

    async def hang_up(self, call_sid: str) -> dict[str, Any]:
        """End the call for everyone; Twilio then stops the media stream."""
        return await self.update_call(call_sid, {"Status": "completed"})

    async def transfer(self, call_sid: str, target: str) -> dict[str, Any]:
        """Connect the caller to ``target`` (E.164 number or SIP URI) instead of us."""
        return await self.update_call(call_sid, {"Twiml": dial_twiml(target)})

    async def create_call(self, params: Sequence[tuple[str, str]]) -> dict[str, Any]:
        """``POST Calls.json``: place a call (``vantum.protocol.twilio.dialing`` builds
        ``params``; repeated fields such as ``StatusCallbackEvent`` are kept)."""
        url = f"{self.api_base}/2010-04-01/Accounts/{self.account_sid}/Calls.json"
        return await self._post(url, list(params), "the new call")

    async def update_call(self, call_sid: str, params: Mapping[str, str]) -> dict[str, Any]:
        """POST ``params`` to the Call resource; returns Twilio's JSON for the call."""
        return await self._post(self.call_url(call_sid), list(params.items()), f"call {call_sid}")

    async def _post(self, url: str, data: list[tuple[str, str]], what: str) -> dict[str, Any]:
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(
                    url,
                    content=urllib.parse.urlencode(data).encode(),
                    headers={"content-type": "application/x-www-form-urlencoded"},
                    auth=self._auth,
                )
        except httpx.HTTPError as exc:
            raise TwilioAPIError(f"Twilio API unreachable ({url}): {exc!r}") from exc
        body = _json(response)
        if response.is_success:
            return body
        message = body.get("message") or response.text[:200] or response.reason_phrase
        code = body.get("code")
        raise TwilioAPIError(
            f"Twilio refused the request for {what} (HTTP {response.status_code}"
            f"{f', code {code}' if code else ''}): {message}",
            response.status_code,
            code if isinstance(code, int) else None,
            body.get("more_info"),
        )


def dial_twiml(target: str) -> str:
    """TwiML that dials ``target``: ``<Dial>+1...</Dial>`` or ``<Dial><Sip>...</Sip></Dial>``."""
    response = ET.Element("Response")
    dial = ET.SubElement(response, "Dial")
    if PHONE_NUMBER.fullmatch(target):
        dial.text = target
    elif SIP_URI.fullmatch(target):
        ET.SubElement(dial, "Sip").text = target
    else:
        raise ValueError(f"transfer target {target!r} is neither a phone number nor a SIP URI")
    return ET.tostring(response, encoding="unicode")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
