"""One-time stream tickets: a media stream must belong to a call this server answered.

``X-Twilio-Signature`` on the stream handshake covers only the stream URL, which is
the same for every call, so a handshake captured once (a proxy log, a debugging
dump) could be replayed to open any number of streams, each a session that spends
STT, LLM and TTS money. So when ``/twilio/voice`` answers a call it puts a ticket
in the TwiML ``<Stream>`` as a ``<Parameter>``; Twilio hands it back in the
``start`` message's ``customParameters``, and the stream is served only if the
ticket is ours, for that ``callSid``, unexpired and unused. Sans-I/O: every
function takes ``now``.

A ticket is ``t1.<exp>.<nonce>.<sig>``: ``exp`` whole Unix seconds, ``nonce`` 16
random base64url characters, ``sig`` the base64url (no padding) HMAC-SHA256 of
``t1.<exp>.<nonce>`` + ``"\\n"`` + ``callSid`` under a key derived from the
server's auth secret (never the secret itself, so no ticket is ever a ``/ws``
token signature). The nonces of redeemed tickets are remembered until their
``exp`` (:class:`UsedTickets`, bounded), which makes each ticket single-use in
this process.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import heapq
import hmac
import re
import secrets

import attrs

from ...errors import VantumError

TICKET_PARAMETER = "vantumTicket"
"""The ``<Parameter>`` name the ticket travels under (TwiML -> ``start.customParameters``)."""
TICKET_VERSION = "t1"
TICKET_TTL_S = 60
"""From the webhook's answer to the stream's ``start``: Twilio takes well under a second."""
MAX_TICKET_CHARS = 128
MAX_USED_TICKETS = 100_000
"""Redeemed tickets remembered at once; only tickets redeemed in the last
:data:`TICKET_TTL_S` are kept, i.e. at most ~1 600 new calls a second."""

_KEY_LABEL = b"vantum twilio stream ticket v1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{16}")
_EXP = re.compile(r"[0-9]{1,12}")
_LEEWAY_S = 5


class TicketFailure(enum.Enum):
    MISSING = "missing"
    MALFORMED = "malformed"
    BAD_SIGNATURE = "bad_signature"
    """Not signed by this server's key, or signed for another ``callSid``."""
    EXPIRED = "expired"
    REUSED = "reused"
    FULL = "full"
    """:data:`MAX_USED_TICKETS` tickets are being remembered: refused rather than forget one."""


class TicketError(VantumError):
    """The stream's ticket is not acceptable; ``reason`` says which check failed.

    The message never echoes the ticket.
    """

    def __init__(self, reason: TicketFailure, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.frozen
class Ticket:
    nonce: str
    expires_at: int


def derive_key(secret: bytes) -> bytes:
    """The ticket key for a server secret (domain-separated from ``/ws`` token signatures)."""
    return hmac.new(secret, _KEY_LABEL, hashlib.sha256).digest()


def issue_ticket(
    key: bytes, call_sid: str, *, now: float, ttl_s: int = TICKET_TTL_S, nonce: str | None = None
) -> str:
    """A ticket that lets one stream of ``call_sid`` start before ``now + ttl_s``."""
    if ttl_s <= 0:
        raise ValueError(f"ttl_s must be positive, got {ttl_s}")
    nonce = secrets.token_urlsafe(12) if nonce is None else nonce
    if not _NONCE.fullmatch(nonce):
        raise ValueError("nonce must be 16 base64url characters")
    signed = f"{TICKET_VERSION}.{int(now) + ttl_s}.{nonce}"
    return f"{signed}.{_sign(key, signed, call_sid)}"


def verify_ticket(
    key: bytes, ticket: str | None, call_sid: str, *, now: float, ttl_s: int = TICKET_TTL_S
) -> Ticket:
    """The ticket's nonce and expiry if it is ours, for ``call_sid`` and unexpired;
    otherwise :class:`TicketError`. Whether it was used before is :class:`UsedTickets`'."""
    if not ticket:
        raise TicketError(TicketFailure.MISSING, "stream ticket missing")
    malformed = TicketError(TicketFailure.MALFORMED, "stream ticket malformed")
    if len(ticket) > MAX_TICKET_CHARS or not ticket.isascii():
        raise malformed
    parts = ticket.split(".")
    if len(parts) != 4 or parts[0] != TICKET_VERSION:
        raise malformed
    _, exp, nonce, sig = parts
    if not _EXP.fullmatch(exp) or not _NONCE.fullmatch(nonce):
        raise malformed
    signed = f"{TICKET_VERSION}.{exp}.{nonce}"
    if not hmac.compare_digest(_sign(key, signed, call_sid).encode(), sig.encode()):
        raise TicketError(TicketFailure.BAD_SIGNATURE, "stream ticket not issued for this call")
    expires_at = int(exp)
    if now >= expires_at:
        raise TicketError(TicketFailure.EXPIRED, "stream ticket expired")
    if expires_at > now + ttl_s + _LEEWAY_S:
        # Ours, but beyond any lifetime we issue: never hold such a nonce for long.
        raise malformed
    return Ticket(nonce, expires_at)


class UsedTickets:
    """The nonces of redeemed tickets, each kept until its ticket expires.

    Memory is bounded: at most ``max_entries`` are held, and an entry is dropped as
    soon as its ticket has expired (a heap orders them by expiry, so each redemption
    costs O(log n)). When full of unexpired tickets it refuses new ones rather than
    forget one (which would make that ticket usable again). The clock it purges by
    never runs backwards: a wall clock stepped back cannot revive a forgotten ticket.
    """

    def __init__(self, max_entries: int = MAX_USED_TICKETS) -> None:
        self.max_entries = max_entries
        self._expiry: dict[str, int] = {}
        self._heap: list[tuple[int, str]] = []
        self._clock = float("-inf")

    def __len__(self) -> int:
        return len(self._expiry)

    def claim(self, ticket: Ticket, now: float) -> None:
        """Mark ``ticket`` used, or raise :class:`TicketError` (reused, expired, full)."""
        self._clock = max(self._clock, now)
        while self._heap and self._heap[0][0] <= self._clock:
            _, nonce = heapq.heappop(self._heap)
            del self._expiry[nonce]
        if ticket.expires_at <= self._clock:
            raise TicketError(TicketFailure.EXPIRED, "stream ticket expired")
        if ticket.nonce in self._expiry:
            raise TicketError(TicketFailure.REUSED, "stream ticket already used")
        if len(self._expiry) >= self.max_entries:
            raise TicketError(
                TicketFailure.FULL, "too many streams started recently; try again later"
            )
        self._expiry[ticket.nonce] = ticket.expires_at
        heapq.heappush(self._heap, (ticket.expires_at, ticket.nonce))


class StreamTickets:
    """A server's ticket key and its used tickets: what the webhook and the stream share."""

    def __init__(
        self, key: bytes, *, ttl_s: int = TICKET_TTL_S, max_used: int = MAX_USED_TICKETS
    ) -> None:
        self._key = key
        self.ttl_s = ttl_s
        self.used = UsedTickets(max_used)

    def issue(self, call_sid: str, *, now: float) -> str:
        return issue_ticket(self._key, call_sid, now=now, ttl_s=self.ttl_s)

    def redeem(self, ticket: str | None, call_sid: str, *, now: float) -> None:
        """Accept ``ticket`` for one stream of ``call_sid``, once; else :class:`TicketError`."""
        self.used.claim(verify_ticket(self._key, ticket, call_sid, now=now, ttl_s=self.ttl_s), now)


def _sign(key: bytes, signed: str, call_sid: str) -> str:
    # The signed part has no newline, so the message splits one way only; surrogatepass:
    # a callSid is whatever a start message's JSON said, lone surrogates included.
    message = f"{signed}\n{call_sid}".encode("utf-8", "surrogatepass")
    digest = hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
