"""HMAC-SHA256 signatures on what Vantum POSTs to the user's endpoints (sans-I/O).

The header is ``X-Vantum-Signature: t=<unix seconds>,v1=<hex>`` where ``hex`` is
HMAC-SHA256 over ``b"<t>." + body`` with the shared secret — the timestamp is
signed with the body so a captured request cannot be replayed later
(:func:`verify` rejects one older than ``tolerance_s``). The same scheme as
Stripe's webhooks, so users' frameworks often have the check already.
"""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Vantum-Signature"


def sign(secret: bytes, body: bytes, timestamp: int) -> str:
    """The header value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def verify(secret: bytes, header: str, body: bytes, now: float, tolerance_s: float = 300) -> bool:
    """Whether ``header`` signs ``body`` with ``secret``, made within ``tolerance_s`` of ``now``."""
    fields = dict(part.partition("=")[::2] for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields.get("t", ""))
    except ValueError:
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).partition(",v1=")[2]
    return hmac.compare_digest(expected, fields.get("v1", ""))


__all__ = ["SIGNATURE_HEADER", "sign", "verify"]
