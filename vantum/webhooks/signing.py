"""The webhook signature: HMAC-SHA256 over ``"{timestamp}.{body}"``.

The timestamp is the delivery attempt's (Unix seconds) and is signed with the body,
so a receiver that rejects old timestamps (``tolerance_s``) rejects a replayed
request even though its signature is valid; the event id in the body is the
idempotency key for the redeliveries at-least-once delivery implies. Several
``v1=`` values may appear (a secret rotation); one match is enough.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "Vantum-Signature"
EVENT_ID_HEADER = "Vantum-Event-Id"
EVENT_TYPE_HEADER = "Vantum-Event-Type"
DEFAULT_TOLERANCE_S = 300.0


class SignatureError(ValueError):
    """The signature header is missing, malformed, stale or does not match."""


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    """The ``Vantum-Signature`` header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(
    secret: bytes,
    header: str,
    body: bytes,
    *,
    now: float,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
) -> int:
    """Check ``header`` against ``body``; returns the signed timestamp or raises.

    A receiver calls this with the raw body bytes (before any JSON parsing) and its
    own clock; ``tolerance_s`` is how old (or how far in the future) a timestamp
    may be.
    """
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureError(f"bad timestamp {value[:20]!r}") from None
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        raise SignatureError("no t= or v1= in the signature header")
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(f"timestamp {timestamp} is outside the {tolerance_s:.0f} s window")
    expected = sign(secret, timestamp, body).rpartition("v1=")[2]
    if not any(hmac.compare_digest(expected, c) for c in candidates):
        raise SignatureError("signature does not match")
    return timestamp
