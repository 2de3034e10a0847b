"""Checking ``X-Twilio-Signature`` so only Twilio can start a phone session.

Anyone who learns the webhook URL could otherwise open calls that spend our STT,
LLM and TTS budget. Twilio signs each request with the account auth token:
base64(HMAC-SHA1(token, full URL + every POST parameter's name and value,
concatenated in name order)). The media-stream WebSocket handshake is signed the
same way over its URL with no parameters.

Twilio's own validators accept the signature computed over the URL both with and
without its port (a proxy in front of us may add or strip ``:443``), so
:func:`validate_signature` tries both forms too. Parameters may be given as a
mapping or as (name, value) pairs, because a form body can repeat a name; values
of a repeated name are sorted like Twilio's helper libraries do.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Twilio-Signature"

Params = Mapping[str, str] | Iterable[tuple[str, str]]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


def compute_signature(auth_token: str, url: str, params: Params = ()) -> str:
    """The signature Twilio would send for a request to ``url`` with ``params``."""
    payload = url + "".join(name + value for name, value in _sorted_pairs(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def validate_signature(auth_token: str, url: str, params: Params, signature: str | None) -> bool:
    """True when ``signature`` is Twilio's for this URL (with or without port) and params."""
    if not signature or not auth_token:
        return False
    pairs = _sorted_pairs(params)
    given = signature.encode()
    valid = False
    for candidate in url_variants(url):
        expected = compute_signature(auth_token, candidate, pairs).encode()
        # No early exit: every candidate costs the same, whatever matched.
        valid |= hmac.compare_digest(expected, given)
    return valid


def url_variants(url: str) -> tuple[str, ...]:
    """The URL as given, with its default port made explicit, and with no port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return (url,)
    netloc = parts.netloc
    start = url.find("//") + 2
    if not netloc or url[start : start + len(netloc)] != netloc:
        return (url,)
    head, tail = url[:start], url[start + len(netloc) :]
    if port is None:
        default = _DEFAULT_PORTS.get(parts.scheme.lower())
        with_port = f"{netloc}:{default}" if default is not None else netloc
        without_port = netloc
    else:
        with_port = netloc
        without_port = netloc[: netloc.rfind(":")]
    variants = {head + with_port + tail, head + without_port + tail}
    return (url, *sorted(variants - {url}))


def _sorted_pairs(params: Params) -> list[tuple[str, str]]:
    items = params.items() if isinstance(params, Mapping) else params
    grouped: dict[str, set[str]] = {}
    for name, value in items:
        grouped.setdefault(name, set()).add(value)
    return [(name, value) for name in sorted(grouped) for value in sorted(grouped[name])]
