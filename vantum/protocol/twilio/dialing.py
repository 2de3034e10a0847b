"""Placing a call through Twilio: the ``Calls.json`` request and AMD verdicts (sans-I/O).

An outbound call is ``POST /2010-04-01/Accounts/{AccountSid}/Calls.json`` with
``To``, ``From`` and ``Url``: when the callee answers, Twilio fetches ``Url`` (our
``/twilio/voice``, signed like any webhook) and runs the TwiML it returns, the same
``<Connect><Stream>`` with a one-time ticket an incoming call gets. ``Url`` rather
than inline ``Twiml``: the ticket is bound to the ``CallSid``, which does not exist
until Twilio has created the call. Everything the call needs travels in that URL's
query, which Twilio's signature covers: ``agent``, ``vantumDial`` (our id for the
outbound request, tying the session's record to it), ``amd=1`` and ``var.NAME``
template variables.

``StatusCallback`` (``/twilio/status``) reports ``initiated``, ``ringing``,
``answered`` and ``completed`` with the final ``CallStatus`` (``completed``,
``busy``, ``no-answer``, ``failed``, ``canceled``): the outcome recorded.

Answering-machine detection is Twilio's asynchronous AMD: ``MachineDetection=
DetectMessageEnd`` + ``AsyncAmd=true`` lets the call connect at once while Twilio
listens, and posts ``AnsweredBy`` to ``AsyncAmdStatusCallback`` (``/twilio/amd``):
``human`` within a few seconds of the callee's first words, ``machine_end_beep`` /
``machine_end_silence`` / ``machine_end_other`` after a voicemail greeting ends (so
a message left then is recorded whole), ``fax`` or ``unknown``.
"""

from __future__ import annotations

import enum
import math
import re
import urllib.parse
from collections.abc import Mapping

import attrs

E164 = re.compile(r"\+[1-9][0-9]{6,14}")
CLIENT_OR_SIP = re.compile(r"(client:[A-Za-z0-9_]{1,120}|sips?:[^\s<>\"']{3,250})")
VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_URL_CHARS = 3800
"""Twilio accepts URLs up to 4 000 characters; variables beyond this are refused."""
FINAL_STATUSES = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
STATUS_EVENTS = "initiated ringing answered completed"

VOICE_PATH = "/twilio/voice"
STATUS_PATH = "/twilio/status"
AMD_PATH = "/twilio/amd"
DIAL_PARAMETER = "vantumDial"
AMD_PARAMETER = "amd"
VARIABLE_PREFIX = "var."


class Verdict(enum.Enum):
    """What answered, as far as the call's agent cares."""

    HUMAN = "human"
    MACHINE = "machine"
    UNKNOWN = "unknown"
    """Twilio could not tell, or it did not say in time: treated as a person."""


def verdict(answered_by: str) -> Verdict:
    """Twilio's ``AnsweredBy`` as a :class:`Verdict`."""
    if answered_by == "human":
        return Verdict.HUMAN
    if answered_by.startswith("machine") or answered_by == "fax":
        return Verdict.MACHINE
    return Verdict.UNKNOWN


@attrs.frozen
class DialRequest:
    """One outbound call to place: who, from which number, which agent, its variables."""

    to: str
    from_: str
    agent: str | None = None
    variables: Mapping[str, str] = attrs.field(factory=dict)
    amd: bool = True
    amd_timeout_s: int = 30
    """``MachineDetectionTimeout`` (3-59 s, Twilio's default 30)."""
    ring_timeout_s: int = 30
    """``Timeout``: how long to let it ring before ``no-answer``."""

    def __attrs_post_init__(self) -> None:
        for field, value in (("to", self.to), ("from", self.from_)):
            if not (E164.fullmatch(value) or CLIENT_OR_SIP.fullmatch(value)):
                raise ValueError(f"{field} {value[:40]!r} is not an E.164 number (+14155550100)")
        for name, value in self.variables.items():
            if not VARIABLE_NAME.fullmatch(name) or not isinstance(value, str):
                raise ValueError(f"variable {name[:40]!r} is not NAME=text")
        if not 3 <= self.amd_timeout_s <= 59:
            raise ValueError("amd_timeout_s must be 3-59 (Twilio's MachineDetectionTimeout)")
        if not 5 <= self.ring_timeout_s <= 600:
            raise ValueError("ring_timeout_s must be 5-600")


def amd_timeout_for(wait_ms: int) -> int:
    """Twilio's ``MachineDetectionTimeout`` covering an agent's ``amd_wait_ms``."""
    return min(59, max(3, math.ceil(wait_ms / 1000)))


def _url(base: str, path: str, query: list[tuple[str, str]]) -> str:
    return f"{base}{path}?{urllib.parse.urlencode(query)}" if query else base + path


def create_call_params(
    request: DialRequest, public_base: str, dial_id: str
) -> list[tuple[str, str]]:
    """The form fields of ``Calls.json`` for ``request``; ``public_base`` is
    ``https://host[/prefix]`` Twilio reaches this server at."""
    query: list[tuple[str, str]] = [(DIAL_PARAMETER, dial_id)]
    if request.agent:
        query.append(("agent", request.agent))
    if request.amd:
        query.append((AMD_PARAMETER, "1"))
    query += [(VARIABLE_PREFIX + k, v) for k, v in sorted(request.variables.items())]
    voice_url = _url(public_base, VOICE_PATH, query)
    if len(voice_url) > MAX_URL_CHARS:
        raise ValueError(
            f"the call's variables make a {len(voice_url)}-character URL; "
            f"Twilio takes at most {MAX_URL_CHARS}"
        )
    callback_query = [(DIAL_PARAMETER, dial_id)]
    params = [
        ("To", request.to),
        ("From", request.from_),
        ("Url", voice_url),
        ("Method", "POST"),
        ("Timeout", str(request.ring_timeout_s)),
        ("StatusCallback", _url(public_base, STATUS_PATH, callback_query)),
        ("StatusCallbackMethod", "POST"),
        *[("StatusCallbackEvent", e) for e in STATUS_EVENTS.split()],
    ]
    if request.amd:
        params += [
            ("MachineDetection", "DetectMessageEnd"),
            ("AsyncAmd", "true"),
            ("AsyncAmdStatusCallback", _url(public_base, AMD_PATH, callback_query)),
            ("AsyncAmdStatusCallbackMethod", "POST"),
            ("MachineDetectionTimeout", str(request.amd_timeout_s)),
        ]
    return params


def variables_from(parameters: Mapping[str, str]) -> dict[str, str]:
    """The ``var.NAME`` entries of a stream's parameters, as template variables."""
    return {
        k[len(VARIABLE_PREFIX) :]: v
        for k, v in parameters.items()
        if k.startswith(VARIABLE_PREFIX) and VARIABLE_NAME.fullmatch(k[len(VARIABLE_PREFIX) :])
    }
