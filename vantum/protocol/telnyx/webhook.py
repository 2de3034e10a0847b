"""Telnyx webhook signatures: Ed25519 over ``"{telnyx-timestamp}|{raw body}"`` (sans-I/O).

Telnyx signs every API v2 webhook with the account's Ed25519 key and sends the
base64 signature in ``telnyx-signature-ed25519`` and the Unix time in
``telnyx-timestamp``. We check it against the account's public key (Mission
Control -> Keys & Credentials -> Public Key) and refuse anything older or newer
than :data:`TOLERANCE_S` (Telnyx's SDKs use 300 s), so a captured webhook cannot be
replayed later. The bytes verified are the raw body, never re-serialised JSON.

The library is PyCA ``cryptography`` (its Ed25519 is OpenSSL's): well kept,
typed, already the usual Python answer for Ed25519 — hand-written curve code
would be the wrong kind of dependency to save.
"""

from __future__ import annotations

import base64
import binascii
import enum

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ...errors import ConfigError, VantumError

SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
TOLERANCE_S = 300


class WebhookFailure(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"
    STALE = "stale"
    BAD_SIGNATURE = "bad_signature"


class WebhookSignatureError(VantumError):
    def __init__(self, reason: WebhookFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


def load_public_key(b64: str) -> Ed25519PublicKey:
    """The account's public key as Mission Control shows it (base64 of 32 bytes)."""
    try:
        raw = base64.b64decode(b64.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"TELNYX_PUBLIC_KEY is not a base64 Ed25519 public key: {exc}") from None


def verify_webhook(
    key: Ed25519PublicKey,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    *,
    now: float,
    tolerance_s: int = TOLERANCE_S,
) -> None:
    """Return if ``body`` was signed by Telnyx within ``tolerance_s`` of ``now``; else
    raise :class:`WebhookSignatureError` saying which check failed."""
    if not signature or not timestamp:
        raise WebhookSignatureError(WebhookFailure.MISSING, "signature headers missing")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= 12):
        raise WebhookSignatureError(WebhookFailure.MALFORMED, "telnyx-timestamp is not a number")
    try:
        sig = base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise WebhookSignatureError(WebhookFailure.MALFORMED, "signature is not base64") from None
    if len(sig) != 64:
        raise WebhookSignatureError(WebhookFailure.MALFORMED, "signature is not 64 bytes")
    if abs(now - int(timestamp)) > tolerance_s:
        raise WebhookSignatureError(
            WebhookFailure.STALE, f"timestamp is more than {tolerance_s} s from now"
        )
    try:
        key.verify(sig, timestamp.encode() + b"|" + body)
    except InvalidSignature:
        raise WebhookSignatureError(WebhookFailure.BAD_SIGNATURE, "signature invalid") from None


def sign_webhook(key: Ed25519PrivateKey, body: bytes, timestamp: int) -> str:
    """What Telnyx puts in ``telnyx-signature-ed25519`` (the fake Telnyx signs with it)."""
    return base64.b64encode(key.sign(str(timestamp).encode() + b"|" + body)).decode("ascii")
