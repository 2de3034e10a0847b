"""Telnyx Call Control v2 over REST: answer (with streaming), hang up, transfer, reject,
send DTMF.

Every action is ``POST {api_base}/v2/calls/{call_control_id}/actions/{action}`` with
``Authorization: Bearer <API key>`` and a JSON body; Telnyx answers
``{"data": {"result": "ok"}}`` or ``{"errors": [{"code", "title", "detail"}]}``
(422 with code ``90018`` once the call has ended). ``api_base`` is configurable so
tests point it at :func:`vantum.testing.fake_telnyx.serve_fake_telnyx_rest`.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Mapping
from typing import Any

import httpx

from ..config import Config
from ..errors import ConfigError, VantumError
from ..protocol.telnyx.call_control import reject_body, send_dtmf_body, transfer_body


class TelnyxAPIError(VantumError):
    """Telnyx refused an action (``status`` and its first error ``code``) or was unreachable."""

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class TelnyxREST:
    """A small Call Control client; one instance serves many calls."""

    def __init__(
        self, api_key: str, api_base: str = "https://api.telnyx.com", *, timeout: float = 10.0
    ) -> None:
        if not api_key:
            raise ConfigError("a Telnyx API key is required for Call Control")
        self.api_base = api_base.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}

    @classmethod
    def from_config(cls, config: Config) -> TelnyxREST:
        if not config.telnyx_api_key:
            raise ConfigError("Telnyx calls need TELNYX_API_KEY to be set")
        return cls(config.telnyx_api_key, config.telnyx_api_base)

    def action_url(self, call_control_id: str, action: str) -> str:
        if not call_control_id or len(call_control_id) > 256:
            raise ValueError("a call_control_id is 1-256 characters")
        quoted = urllib.parse.quote(call_control_id, safe=":-_")
        return f"{self.api_base}/v2/calls/{quoted}/actions/{action}"

    async def answer(self, call_control_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return await self.action(call_control_id, "answer", body)

    async def hang_up(self, call_control_id: str) -> dict[str, Any]:
        return await self.action(call_control_id, "hangup", {})

    async def transfer(self, call_control_id: str, target: str) -> dict[str, Any]:
        return await self.action(call_control_id, "transfer", transfer_body(target))

    async def send_dtmf(self, call_control_id: str, digits: str) -> dict[str, Any]:
        return await self.action(call_control_id, "send_dtmf", send_dtmf_body(digits))

    async def reject(self, call_control_id: str, cause: str = "USER_BUSY") -> dict[str, Any]:
        return await self.action(call_control_id, "reject", reject_body(cause))

    async def action(
        self, call_control_id: str, action: str, body: Mapping[str, Any]
    ) -> dict[str, Any]:
        url = self.action_url(call_control_id, action)
        try:
            async with httpx.AsyncClient(timeout=self.timeout) as client:
                response = await client.post(url, json=dict(body), headers=self._headers)
        except httpx.HTTPError as exc:
            raise TelnyxAPIError(f"Telnyx API unreachable ({url}): {exc!r}") from exc
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        payload = payload if isinstance(payload, dict) else {}
        if response.is_success:
            return payload
        errors = payload.get("errors") or [{}]
        first = errors[0] if isinstance(errors, list) and isinstance(errors[0], dict) else {}
        code = first.get("code")
        raise TelnyxAPIError(
            f"Telnyx refused {action} for call {call_control_id} (HTTP "
            f"{response.status_code}{f', code {code}' if code else ''}): "
            f"{first.get('detail') or first.get('title') or response.reason_phrase}",
            response.status_code,
            str(code) if code is not None else None,
        )
