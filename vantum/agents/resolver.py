"""The agent resolver webhook: the user's service picks a call's agent at call start.

When ``VANTUM_AGENT_RESOLVER_URL`` is set, Vantum POSTs the call's facts as JSON
(:meth:`~.selection.CallFacts.to_json`) with a signature header and reads back
``{agent, variables, overrides}``. The call is waiting meanwhile, so the request is
bounded (``VANTUM_AGENT_RESOLVER_TIMEOUT_S``, default 1.5 s, connect included): on
a timeout, a non-2xx answer, bad JSON or an unknown agent the call goes on with
the agent it asked for (or the default), the failure is logged and counted
(``vantum_agent_resolver_failures_total{reason}``), and the caller never hears it.

The signature is ``X-Vantum-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>">`` under ``VANTUM_AGENT_RESOLVER_SECRET``: the timestamp lets the
receiver refuse replays (docs/agents.md has a verification snippet).

httpx is the client: it is already a dependency (the OpenAI engine) and runs under
trio through anyio.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import ssl
import time
from collections.abc import Callable

import httpx
import trio

from .selection import AgentChoice, CallFacts, parse_choice

log = logging.getLogger("vantum.agents")

SIGNATURE_HEADER = "X-Vantum-Signature"
DEFAULT_TIMEOUT_S = 1.5
MAX_RESPONSE_BYTES = 64 * 1024


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The ``X-Vantum-Signature`` value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: bytes, body: bytes, header: str, now: float, tolerance_s: float = 300) -> bool:
    """Check a signature header (what a receiver does; used by tests and examples)."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
        given = fields["v1"]
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, given)


class ResolverFailure(Exception):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


class AgentResolver:
    """Asks the resolver webhook for each call's agent (one request per call)."""

    def __init__(
        self,
        url: str,
        secret: bytes,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        on_failure: Callable[[str], None] | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.url = url
        self.secret = secret
        self.timeout_s = timeout_s
        self.on_failure = on_failure
        self.wall_clock = wall_clock
        # Made once, at start-up: building a TLS context costs ~0.2 s of CPU, which a
        # per-call client would otherwise pay inside the call's resolver timeout.
        self._tls = ssl.create_default_context()

    async def resolve(self, facts: CallFacts) -> AgentChoice | None:
        """The resolver's choice, or None (logged and counted) if it gave none in time."""
        try:
            with trio.fail_after(self.timeout_s):
                return await self._ask(facts)
        except trio.TooSlowError:
            self._failed(facts, "timeout", f"no answer within {self.timeout_s:g} s")
        except ResolverFailure as exc:
            self._failed(facts, exc.reason, str(exc))
        return None

    def failed(self, facts: CallFacts, reason: str, detail: str) -> None:
        """Count and log a failure found after the answer (e.g. an unknown agent)."""
        self._failed(facts, reason, detail)

    def _failed(self, facts: CallFacts, reason: str, detail: str) -> None:
        log.warning(
            "call %s: agent resolver failed (%s): %s; using the requested or default agent",
            facts.call_id,
            reason,
            detail,
        )
        if self.on_failure is not None:
            self.on_failure(reason)

    async def _ask(self, facts: CallFacts) -> AgentChoice:
        body = json.dumps(facts.to_json(), separators=(",", ":")).encode()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: sign(self.secret, body, int(self.wall_clock())),
        }
        try:
            # The overall bound is the cancel scope around this; httpx's own timeout
            # is only a backstop.
            async with httpx.AsyncClient(timeout=self.timeout_s + 1, verify=self._tls) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise ResolverFailure("error", f"{type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise ResolverFailure("status", f"HTTP {response.status_code}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise ResolverFailure("bad_response", "response larger than 64 KiB")
        try:
            return parse_choice(json.loads(response.content), "resolver response")
        except ValueError as exc:  # includes JSONDecodeError
            raise ResolverFailure("bad_response", str(exc)) from None


__all__ = ["DEFAULT_TIMEOUT_S", "SIGNATURE_HEADER", "AgentResolver", "sign", "verify"]
