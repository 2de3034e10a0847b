"""What every tool kind shares: the result, the per-call context, call control."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol, runtime_checkable

import attrs

from ..providers.base import ToolSchema

Action = Literal["end_call"]


@attrs.frozen
class ToolResult:
    """How one tool call ended; ``content`` is what the model reads (JSON text)."""

    ok: bool
    value: Any = None
    """The tool's answer (JSON-able) when ``ok``."""
    error: str = ""
    """Why it failed, in words the model can pass on, when not ``ok``."""
    action: Action | None = None
    """A built-in's effect on the call once the answer is spoken (``end_call``)."""

    @property
    def content(self) -> str:
        if self.ok:
            return json.dumps({"ok": True, "result": self.value}, default=str)
        return json.dumps({"ok": False, "error": self.error})


def failed(error: str) -> ToolResult:
    return ToolResult(False, error=error)


class CallControl(Protocol):
    """What the carrier can do to the live call (Twilio: the REST API)."""

    async def hang_up(self) -> None: ...

    async def transfer(self, target: str) -> None:
        """Redirect the live call to ``target``; raises :class:`ToolFailure` if refused."""
        ...


@runtime_checkable
class DtmfControl(Protocol):
    """A carrier that presses keys on the call out of band (Telnyx ``send_dtmf``).

    Twilio has no such thing that keeps the media stream (docs/telephony.md, "DTMF
    out"), so its control does not implement this and its tones go in band."""

    async def send_dtmf(self, digits: str) -> None:
        """Press ``digits`` (keys, ``w``/``W`` pauses); raises :class:`ToolFailure` if refused."""
        ...


class ToolFailure(Exception):
    """Raised inside a tool to fail the call with a message the model may repeat."""


@attrs.frozen
class ToolContext:
    """What a tool may know and do about the call it serves."""

    call_id: str
    """The session id (browser) or the carrier's call id (Twilio ``CallSid``)."""
    variables: Mapping[str, str] = attrs.field(factory=dict)
    say: Callable[[str], Awaitable[None]] | None = None
    """Speak a sentence now, before the result (a progress note)."""
    control: CallControl | None = None
    """None: a browser call (call control becomes events the page acts on)."""
    transfer_numbers: tuple[str, ...] = ()
    emit_transfer: Callable[[str], Awaitable[None]] | None = None
    """Tells the client a transfer was asked for (``conversation.tool.transfer``)."""
    play_dtmf: Callable[[str], Awaitable[None]] | None = None
    """A phone call: queue DTMF tones in the answer's audio, after what was said
    before the tool call and before what is said after it. None: not a phone call."""


@attrs.frozen
class ToolEnv:
    """What the server gives a call's tools: the signing secret, the carrier's call
    control and the id tools see."""

    secret: bytes
    """Signs HTTP tool requests (``VANTUM_TOOL_SECRET``, else the auth secret)."""
    control: CallControl | None = None
    call_id: str = ""
    phone: bool = False
    """A phone call (Twilio, Telnyx): ``send_dtmf`` can press keys on it."""


class ToolRunner(Protocol):
    """One tool of one kind, ready to run."""

    @property
    def schema(self) -> ToolSchema: ...

    @property
    def timeout_s(self) -> float: ...

    @property
    def interruptible(self) -> bool: ...

    async def run(self, call_id: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run once; may raise (the toolbox turns any exception into a failed result)."""
        ...


__all__ = [
    "Action",
    "CallControl",
    "DtmfControl",
    "ToolContext",
    "ToolEnv",
    "ToolFailure",
    "ToolResult",
    "ToolRunner",
    "failed",
]
