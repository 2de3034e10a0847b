"""Who may open ``/ws``: short-lived signed tokens and an Origin allow-list. Sans-I/O.

A token is ``v1.<payload>.<signature>``: ``payload`` is base64url (no padding) of a
compact JSON object ``{"aud", "sub", "iat", "exp", "nonce"}`` and ``signature`` is the
base64url HMAC-SHA256 of ``v1.<payload>`` under the server secret. The server keeps
no token state: whoever holds the secret (the ``vantum token`` command, an app
backend) mints tokens; the server checks signature, audience and lifetime on connect.

The audience names what a token opens (``ws``: the ``/ws`` endpoint), so a token the
same secret signed for something else (an app backend's own API, say) opens nothing
here. The lifetime ``exp - iat`` is bounded (``max_ttl_s``): a token is a short-lived
pass, not a credential, and a ten-year token is refused however it was minted.

Why this shape rather than JWT: one algorithm, no header to negotiate (so no
``alg: none`` class of bug), and a format small enough to verify by reading.

The signature is compared as its canonical text, not as decoded bytes, so every
change to any character of a token is a different token: base64 padding bits
cannot smuggle in a second spelling of a valid signature.

Browsers cannot set headers on a WebSocket, so :func:`extract_token` also reads
``?token=`` from the query string and a ``bearer.<token>`` subprotocol.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs

from ..errors import ConfigError, VantumError

VERSION = "v1"
MIN_SECRET_BYTES = 32
MAX_TOKEN_CHARS = 8192
"""Longer tokens are rejected before any decoding (they are never ours). Room for an
agent's per-call variables and overrides; ``issue_token`` refuses to mint longer."""
DEFAULT_LEEWAY_S = 5.0
"""Tolerated clock skew for ``iat`` between the minting host and the server."""
DEFAULT_MAX_TTL_S = 4 * 3600
"""Longest accepted lifetime (``exp - iat``) unless configured (``VANTUM_TOKEN_MAX_TTL_S``)."""
MAX_SUBJECT_CHARS = 128
"""A subject is any string up to this length (it names the caller in logs)."""
WS_AUDIENCE = "ws"
"""The audience ``/ws`` accepts: the browser page, ``vantum call`` and app backends mint it."""
SUBPROTOCOL_PREFIX = "bearer."

_AUDIENCE = re.compile(r"[a-z0-9][a-z0-9._:-]{0,63}")


class AuthFailure(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    NO_AUDIENCE = "no_audience"
    """Signed by us but without ``aud``: minted before audiences existed; mint a new one."""
    WRONG_AUDIENCE = "wrong_audience"
    TOO_LONG_LIVED = "too_long_lived"
    """``exp - iat`` exceeds the server's maximum lifetime."""
    ORIGIN = "origin_not_allowed"


class AuthError(VantumError):
    """The connection carries no acceptable token; ``reason`` says which check failed.

    The message is safe to send to the client: it never echoes the token.
    """

    def __init__(self, reason: AuthFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.frozen
class TokenClaims:
    subject: str
    audience: str
    issued_at: int
    expires_at: int
    nonce: str
    agent: str | None = None
    """The agent the call must run (docs/agents.md); None: the URL's or the default."""
    variables: Mapping[str, Any] = attrs.field(factory=dict)
    """Template variables for the agent (``vars``); checked when the call starts."""
    overrides: Mapping[str, Any] = attrs.field(factory=dict)
    """Per-call instructions/greeting/voice/language; checked when the call starts."""

    def agent_claims(self) -> dict[str, Any]:
        """What the agent resolver is shown of this token (no nonce, no times)."""
        return {
            "sub": self.subject,
            "agent": self.agent,
            "vars": dict(self.variables),
            "overrides": dict(self.overrides),
        }


@attrs.frozen
class Admission:
    """A WebSocket request that passed the checks; accept it with ``subprotocol``."""

    claims: TokenClaims | None
    """None when token auth is disabled (the explicit dev flag)."""
    subprotocol: str | None
    """Browsers fail the handshake unless one offered subprotocol is echoed back."""


def load_secret(value: str | bytes) -> bytes:
    """Check and return an HMAC secret (``VANTUM_AUTH_SECRET``); short secrets are refused."""
    raw = value.encode() if isinstance(value, str) else value
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(
            f"auth secret must be at least {MIN_SECRET_BYTES} bytes (got {len(raw)}); "
            "make one with `python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
        )
    return raw


def new_secret() -> str:
    """A fresh random secret, printable so it can live in an environment variable."""
    return secrets.token_urlsafe(32)


def issue_token(
    secret: bytes,
    *,
    subject: str,
    audience: str,
    ttl_s: int,
    now: float,
    max_ttl_s: int = DEFAULT_MAX_TTL_S,
    agent: str | None = None,
    variables: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
) -> str:
    """Mint a token for ``subject`` to open ``audience``, valid from ``now`` for ``ttl_s`` s.

    ``agent``, ``variables`` and ``overrides`` bind the call to an agent and fill its
    templates (docs/agents.md); only a signed token may carry them.

    Raises ValueError for a TTL that is not positive or exceeds ``max_ttl_s`` (the
    server would refuse the token), a subject over :data:`MAX_SUBJECT_CHARS`, or an
    audience that is not a short lower-case name (``ws``, ``my-api``...).
    """
    load_secret(secret)
    if isinstance(ttl_s, bool) or not isinstance(ttl_s, int) or ttl_s <= 0:
        raise ValueError(f"ttl_s must be a positive integer, got {ttl_s!r}")
    if ttl_s > max_ttl_s:
        raise ValueError(f"ttl_s {ttl_s} exceeds the maximum token lifetime of {max_ttl_s} s")
    if len(subject) > MAX_SUBJECT_CHARS:
        raise ValueError(f"subject longer than {MAX_SUBJECT_CHARS} characters")
    if not valid_audience(audience):
        raise ValueError(f"audience must match {_AUDIENCE.pattern}, got {audience[:80]!r}")
    iat = int(now)
    claims: dict[str, Any] = {
        "aud": audience,
        "sub": subject,
        "iat": iat,
        "exp": iat + ttl_s,
        "nonce": secrets.token_hex(8),
    }
    if agent is not None:
        claims["agent"] = agent
    if variables:
        claims["vars"] = dict(variables)
    if overrides:
        claims["overrides"] = dict(overrides)
    payload = _b64encode(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signed = f"{VERSION}.{payload}"
    token = f"{signed}.{_sign(secret, signed)}"
    if len(token) > MAX_TOKEN_CHARS:
        raise ValueError(
            f"token would be {len(token)} characters (at most {MAX_TOKEN_CHARS}): "
            "pass fewer or shorter variables/overrides, or use the agent resolver"
        )
    return token


def valid_audience(audience: str) -> bool:
    """Whether ``audience`` is a name a token may carry: 1-64 of ``a-z 0-9 . _ : -``."""
    return _AUDIENCE.fullmatch(audience) is not None


def verify_token(
    secret: bytes,
    token: str | None,
    *,
    now: float,
    audience: str,
    max_ttl_s: int = DEFAULT_MAX_TTL_S,
    leeway_s: float = DEFAULT_LEEWAY_S,
) -> TokenClaims:
    """Return the token's claims or raise :class:`AuthError`; checks run cheapest first.

    A token opens only ``audience`` and may live at most ``max_ttl_s`` (``exp - iat``).
    """
    if not token:
        raise AuthError(AuthFailure.MISSING, "authentication token missing")
    if len(token) > MAX_TOKEN_CHARS or not token.isascii():
        raise AuthError(AuthFailure.MALFORMED, "authentication token malformed")
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != VERSION or not parts[1] or not parts[2]:
        raise AuthError(AuthFailure.MALFORMED, "authentication token malformed")
    signed = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, signed).encode(), parts[2].encode()):
        raise AuthError(AuthFailure.BAD_SIGNATURE, "authentication token signature invalid")
    claims = _claims(parts[1])
    if not claims.audience:
        raise AuthError(
            AuthFailure.NO_AUDIENCE, "authentication token has no audience: mint a new one"
        )
    if claims.audience != audience:
        raise AuthError(AuthFailure.WRONG_AUDIENCE, "authentication token is not for this endpoint")
    if claims.expires_at - claims.issued_at > max_ttl_s:
        raise AuthError(
            AuthFailure.TOO_LONG_LIVED,
            f"authentication token lives longer than the {max_ttl_s} s this server allows",
        )
    if now >= claims.expires_at:
        raise AuthError(AuthFailure.EXPIRED, "authentication token expired")
    if claims.issued_at > now + leeway_s:
        raise AuthError(AuthFailure.NOT_YET_VALID, "authentication token not yet valid")
    return claims


def extract_token(query_string: bytes, headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    """The token an ASGI WebSocket request carries, if any.

    Looked for in order: ``Authorization: Bearer``, a ``bearer.<token>`` entry in
    ``Sec-WebSocket-Protocol`` (the server must then accept that subprotocol), and
    ``?token=`` (simplest for browsers, but it lands in access logs: keep TTLs short).
    """
    protocols: list[str] = []
    for name, value in headers:
        key = name.lower()
        if key == b"authorization":
            scheme, _, credential = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer" and credential.strip():
                return credential.strip()
        elif key == b"sec-websocket-protocol":
            protocols += [p.strip() for p in value.decode("latin-1").split(",")]
    for proto in protocols:
        if proto.startswith(SUBPROTOCOL_PREFIX) and len(proto) > len(SUBPROTOCOL_PREFIX):
            return proto[len(SUBPROTOCOL_PREFIX) :]
    values = parse_qs(query_string.decode("latin-1")).get("token")
    return values[0] if values else None


def admit(
    scope: Mapping[str, Any],
    *,
    secret: bytes | None,
    allowed_origins: Sequence[str],
    now: float,
    audience: str = WS_AUDIENCE,
    max_ttl_s: int = DEFAULT_MAX_TTL_S,
) -> Admission:
    """Check an ASGI ``websocket`` scope: Origin first (cheap), then the token.

    ``secret=None`` disables token checks (``--insecure-no-auth``); the Origin
    allow-list still applies. An empty allow-list means same-origin: the Origin
    must name the ``Host`` the request came to. Raises :class:`AuthError`.
    """
    headers: list[tuple[bytes, bytes]] = list(scope.get("headers") or [])
    origin = _header(headers, b"origin")
    if not allowed_origins:
        # Nothing configured: same-origin only (the page this server serves itself).
        host = _header(headers, b"host")
        allowed_origins = [f"http://{host}", f"https://{host}"] if host else []
    if not origin_allowed(origin, allowed_origins):
        raise AuthError(AuthFailure.ORIGIN, "origin not allowed")
    offered = [
        p.strip()
        for k, v in headers
        if k.lower() == b"sec-websocket-protocol"
        for p in v.decode("latin-1").split(",")
        if p.strip()
    ]
    plain = [p for p in offered if not p.startswith(SUBPROTOCOL_PREFIX)]
    subprotocol = plain[0] if plain else (offered[0] if offered else None)
    if secret is None:
        return Admission(None, subprotocol)
    token = extract_token(scope.get("query_string", b""), headers)
    claims = verify_token(secret, token, now=now, audience=audience, max_ttl_s=max_ttl_s)
    return Admission(claims, subprotocol)


def origin_allowed(origin: str | None, allow: Sequence[str], *, allow_missing: bool = True) -> bool:
    """Whether a browser ``Origin`` may connect.

    ``allow`` holds exact origins (``https://app.example.com``), ``*`` (any), or
    wildcard hosts (``https://*.example.com`` matches sub-domains, not the apex;
    ``http://localhost:*`` matches any port). Comparison ignores case. A request
    with no Origin is not from a browser page, so no page can have forged it:
    ``allow_missing`` (default) admits it and leaves the decision to the token.
    """
    if origin is None:
        return allow_missing
    parsed = _split_origin(origin)
    for pattern in allow:
        if pattern == "*":
            return True
        if parsed is None:
            if origin.lower() == pattern.lower():  # e.g. the literal "null"
                return True
            continue
        want = _split_origin(pattern, wildcards=True)
        if want is not None and _origin_matches(parsed, want):
            return True
    return False


# --- internals -------------------------------------------------------------------


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    return next((v.decode("latin-1") for k, v in headers if k.lower() == name), None)


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def _sign(secret: bytes, signed: str) -> str:
    return _b64encode(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def _claims(payload: str) -> TokenClaims:
    """Decode a payload whose signature already checked out (so it is ours, or a bug)."""
    try:
        obj = json.loads(_b64decode(payload))
    except (binascii.Error, ValueError):
        raise AuthError(AuthFailure.MALFORMED, "authentication token malformed") from None
    if not isinstance(obj, dict):
        raise AuthError(AuthFailure.MALFORMED, "authentication token malformed")
    aud, sub, iat, exp, nonce = (obj.get(k) for k in ("aud", "sub", "iat", "exp", "nonce"))
    if not (
        isinstance(sub, str)
        and len(sub) <= MAX_SUBJECT_CHARS
        and isinstance(nonce, str)
        and (aud is None or isinstance(aud, str))
        and all(isinstance(t, int) and not isinstance(t, bool) for t in (iat, exp))
    ):
        raise AuthError(AuthFailure.MALFORMED, "authentication token malformed")
    assert isinstance(iat, int) and isinstance(exp, int)
    agent, variables, overrides = obj.get("agent"), obj.get("vars"), obj.get("overrides")
    if not (
        (agent is None or isinstance(agent, str))
        and (variables is None or isinstance(variables, dict))
        and (overrides is None or isinstance(overrides, dict))
    ):
        raise AuthError(AuthFailure.MALFORMED, "authentication token malformed")
    return TokenClaims(sub, aud or "", iat, exp, nonce, agent, variables or {}, overrides or {})


_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443"}


def _split_origin(origin: str, *, wildcards: bool = False) -> tuple[str, str, str] | None:
    """``scheme://host[:port]`` to (scheme, host, port), default ports filled in."""
    try:
        parts = urlsplit(origin.strip().lower())
        host = parts.hostname
        port = parts.port
    except ValueError:
        if not wildcards or not origin.endswith(":*"):
            return None
        split = _split_origin(origin[:-2], wildcards=True)
        return None if split is None else (split[0], split[1], "*")
    if not parts.scheme or not host or parts.path not in ("", "/") or parts.query:
        return None
    if parts.username is not None or parts.password is not None:
        return None
    default = _DEFAULT_PORTS.get(parts.scheme, "")
    return parts.scheme, host, str(port) if port is not None else default


def _origin_matches(origin: tuple[str, str, str], pattern: tuple[str, str, str]) -> bool:
    scheme, host, port = origin
    p_scheme, p_host, p_port = pattern
    if scheme != p_scheme or (p_port != "*" and port != p_port):
        return False
    if p_host.startswith("*."):
        suffix = p_host[1:]  # ".example.com"
        return host.endswith(suffix) and len(host) > len(suffix)
    return host == p_host
