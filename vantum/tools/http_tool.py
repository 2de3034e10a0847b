"""HTTP tools: the user's endpoint answers the call.

Vantum POSTs ``{"callId", "tool", "arguments"}`` as JSON, signed
(:mod:`.signing`); a 2xx response's JSON body is the result. Anything else — a
non-2xx status, a timeout, a body that is not JSON, a refused connection — is a
failed result whose message says what happened, so the model can tell the caller
("the booking system is not answering") instead of the call crashing.
"""

from __future__ import annotations

import json
import time
from typing import Any

import attrs
import httpx

from ..agent_spec import HttpTool
from ..providers.base import ToolSchema
from .base import ToolContext, ToolResult, failed
from .signing import SIGNATURE_HEADER, sign


@attrs.frozen
class HttpRunner:
    spec: HttpTool
    secret: bytes
    client: httpx.AsyncClient | None = None
    """Shared connection pool; None opens one per call."""

    @property
    def schema(self) -> ToolSchema:
        return ToolSchema(self.spec.name, self.spec.description, self.spec.parameters)

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s

    @property
    def interruptible(self) -> bool:
        return self.spec.interruptible

    def request(
        self, call_id: str, arguments: dict[str, Any], ctx: ToolContext
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers of the POST (pure, for tests and the docs)."""
        body = json.dumps(
            {
                "callId": ctx.call_id,
                "toolCallId": call_id,
                "tool": self.spec.name,
                "arguments": arguments,
            },
            separators=(",", ":"),
        ).encode()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(time.time())),
        }
        return body, headers

    async def run(self, call_id: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        body, headers = self.request(call_id, arguments, ctx)
        try:
            if self.client is not None:
                response = await self._post(self.client, body, headers)
            else:
                async with httpx.AsyncClient() as client:
                    response = await self._post(client, body, headers)
        except httpx.TimeoutException:
            return failed(f"the {self.spec.name} service did not answer in time")
        except httpx.HTTPError as exc:
            return failed(
                f"the {self.spec.name} service could not be reached ({type(exc).__name__})"
            )
        if not response.is_success:
            return failed(f"the {self.spec.name} service answered HTTP {response.status_code}")
        try:
            value = response.json()
        except ValueError:
            return failed(f"the {self.spec.name} service answered something that is not JSON")
        return ToolResult(True, value)

    async def _post(
        self, client: httpx.AsyncClient, body: bytes, headers: dict[str, str]
    ) -> httpx.Response:
        return await client.post(
            self.spec.url, content=body, headers=headers, timeout=self.spec.timeout_s
        )


__all__ = ["HttpRunner"]
