"""Who may open ``/ws``: per-address rate limit, Origin allow-list, then the token;
and the per-address rate limit of ``/twilio/stream`` (the rest of a phone stream's
admission, signature and stream ticket, belongs to the Twilio transport).

The decision is kept apart from the ASGI plumbing in ``app.py``: :meth:`check`
returns what to do with a handshake and the app only sends it. It also owns the
configuration behind the decision (the token secret, the connect rate limiter),
so a misconfigured server fails when it is built, not on its first call.

A flood from one address and a foreign page are refused during the handshake
(HTTP 429 / 403: no session, nothing to tell them). A caller with a missing or bad
token is accepted just long enough to receive ``connection.error.auth`` and close
code 1008, because a browser cannot read a refused handshake's reason.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import attrs
import trio

from ..config import Config
from ..errors import ConfigError
from ..limits import RateLimiter
from .auth import (
    WS_AUDIENCE,
    AuthError,
    TokenClaims,
    admit,
    extract_token,
    load_secret,
    verify_token,
)
from .metrics import ServerMetrics

log = logging.getLogger("vantum.server")


@attrs.frozen
class HandshakeRefused:
    """Refuse the handshake with an HTTP ``status`` and ``message`` (no session)."""

    status: int
    message: str
    retry_after: int = 0
    """Seconds for a ``retry-after`` header; 0 sends none."""


@attrs.frozen
class HandshakeAccepted:
    """Accept the handshake (echoing ``subprotocol``); ``token_failure`` is then
    reported in band before closing, or None if the caller may start a call."""

    subprotocol: str | None
    token_failure: AuthError | None
    claims: TokenClaims | None = None
    """The valid token's claims (None without auth or after a failure)."""


class AdmissionControl:
    """The ``/ws`` handshake checks, and the refusal counts and log lines they produce."""

    def __init__(self, config: Config, metrics: ServerMetrics) -> None:
        self.allowed_origins = config.allowed_origins
        self.token_max_ttl_s = config.token_max_ttl_s
        self.metrics = metrics
        if config.auth_secret:
            self.auth_secret: bytes | None = load_secret(config.auth_secret)
        elif config.insecure_no_auth:
            self.auth_secret = None
        else:
            raise ConfigError(
                "no /ws auth secret: set VANTUM_AUTH_SECRET, or run with --insecure-no-auth "
                "(development only: anyone who can reach the port can place calls)"
            )
        self.connect_limiter = _limiter(config.connect_rate_per_s, config.connect_burst)
        self.twilio_limiter = _limiter(
            config.twilio_connect_rate_per_s, config.twilio_connect_burst
        )
        """``/twilio/stream``'s own buckets: a browser flood from an address must not use
        up the Twilio media server's allowance, nor Twilio's volume loosen ``/ws``."""
        self._twilio_limited = 0

    def check_twilio_stream(self, scope: dict[str, Any]) -> HandshakeRefused | None:
        """Decide on a ``/twilio/stream`` handshake's rate (inside trio); None admits it
        to the Twilio transport's own checks."""
        ip = _client_ip(scope)
        refused = _rate_refusal(self.twilio_limiter, ip)
        if refused is not None:
            self.metrics.sessions_refused.labels("twilio_rate_limited").inc()
            self._twilio_limited += 1
            n = self._twilio_limited
            if n & (n - 1) == 0:  # 1, 2, 4, 8...: visible, but a flood cannot fill the log
                log.warning(
                    "refused /twilio/stream from %s: connection rate limit "
                    "(VANTUM_TWILIO_CONNECT_RATE); %d refused so far",
                    ip,
                    n,
                )
        return refused

    def check(self, scope: dict[str, Any]) -> HandshakeAccepted | HandshakeRefused:
        """Decide on one ``/ws`` handshake (call inside trio: the limiter uses its clock)."""
        ip = _client_ip(scope)
        refused = _rate_refusal(self.connect_limiter, ip)
        if refused is not None:
            self.metrics.sessions_refused.labels("rate_limited").inc()
            return refused
        now = time.time()
        try:
            admission = admit(scope, secret=None, allowed_origins=self.allowed_origins, now=now)
        except AuthError as exc:
            self.metrics.sessions_refused.labels(f"auth_{exc.reason.value}").inc()
            log.warning("refused /ws from %s: %s", ip, exc.message)
            return HandshakeRefused(403, exc.message)
        failure: AuthError | None = None
        claims: TokenClaims | None = None
        if self.auth_secret is not None:
            token = extract_token(scope.get("query_string", b""), scope.get("headers") or [])
            try:
                claims = verify_token(
                    self.auth_secret,
                    token,
                    now=now,
                    audience=WS_AUDIENCE,
                    max_ttl_s=self.token_max_ttl_s,
                )
            except AuthError as exc:
                self.metrics.sessions_refused.labels(f"auth_{exc.reason.value}").inc()
                log.info("refused /ws from %s: %s", ip, exc.message)
                failure = exc
        return HandshakeAccepted(admission.subprotocol, failure, claims)


def _limiter(rate_per_s: float, burst: int) -> RateLimiter | None:
    return RateLimiter(rate_per_s, burst) if rate_per_s > 0 else None


def rate_refusal(rate_per_s: float) -> HandshakeRefused:
    """The refusal of a connection over its address's rate (here or cluster-wide)."""
    return HandshakeRefused(
        429, "too many connections from this address", math.ceil(1.0 / rate_per_s)
    )


def client_ip(scope: dict[str, Any]) -> str:
    return _client_ip(scope)


def _client_ip(scope: dict[str, Any]) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _rate_refusal(limiter: RateLimiter | None, ip: str) -> HandshakeRefused | None:
    if limiter is None or limiter.allow(ip, trio.current_time()):
        return None
    retry = math.ceil(1.0 / limiter.rate_per_s)
    return HandshakeRefused(429, "too many connections from this address", retry)
