"""Call control the model can ask for: ``end_call``, ``transfer_call``, ``send_dtmf``.

They change the call, not the conversation, so they act through the context:
``end_call`` returns the ``end_call`` action — the answer loop speaks the agent's
goodbye and the turn manager hangs up once it has played (browser:
``connection.lifecycle.hangup`` and a normal close; Twilio: the Call resource is
completed through the REST API). ``transfer_call`` dials only numbers on the
agent's allow-list: on Twilio it redirects the live call to ``<Dial>``; on a
browser call it is an event the page acts on (``conversation.tool.transfer``).
``send_dtmf`` presses keys on a phone call (phone menus): out of band where the
carrier can (Telnyx ``actions/send_dtmf``), else as tones in the answer's audio
(Twilio: its media stream has no DTMF message); on a browser call it fails with
"send_dtmf needs a phone call" (docs/telephony.md, "DTMF out").
"""

from __future__ import annotations

from typing import Any

import attrs

from ..agent_spec import BuiltinTool
from ..audio.dtmf import duration_ms, parse_digits
from ..providers.base import ToolSchema
from .base import DtmfControl, ToolContext, ToolFailure, ToolResult, failed

_DEFAULTS: dict[str, tuple[str, dict[str, Any]]] = {
    "end_call": (
        "End the phone call. Use it when the caller says goodbye or the conversation is "
        "over; a goodbye is spoken for you.",
        {"type": "object", "properties": {}},
    ),
    "transfer_call": (
        "Transfer the caller to a person at one of the allowed phone numbers.",
        {
            "type": "object",
            "properties": {"number": {"type": "string", "description": "E.164 number"}},
            "required": ["number"],
        },
    ),
    "send_dtmf": (
        "Press keys on the phone call, e.g. to choose an option in a phone menu (IVR). "
        "Keys 0-9, *, #, A-D; w is a half-second pause, W a one-second pause.",
        {
            "type": "object",
            "properties": {"digits": {"type": "string", "description": "keys to press, e.g. 1w2#"}},
            "required": ["digits"],
        },
    ),
}


@attrs.frozen
class BuiltinRunner:
    spec: BuiltinTool
    transfer_numbers: tuple[str, ...] = ()

    @property
    def schema(self) -> ToolSchema:
        if self.spec.name not in _DEFAULTS:
            raise ValueError(f"built-in tool {self.spec.name!r} is not implemented")
        description, parameters = _DEFAULTS[self.spec.name]
        if self.spec.name == "transfer_call" and self.transfer_numbers:
            parameters = {
                **parameters,
                "properties": {"number": {"type": "string", "enum": list(self.transfer_numbers)}},
            }
        return ToolSchema(self.spec.name, self.spec.description or description, parameters)

    @property
    def timeout_s(self) -> float:
        return 10.0

    @property
    def interruptible(self) -> bool:
        return False  # a half-done transfer or hang-up must finish and be known

    async def run(self, call_id: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if self.spec.name == "end_call":
            return ToolResult(True, {"ending": True}, action="end_call")
        if self.spec.name == "send_dtmf":
            return await send_dtmf(arguments, ctx)
        number = arguments.get("number")
        if not isinstance(number, str) or number not in ctx.transfer_numbers:
            allowed = ", ".join(ctx.transfer_numbers) or "none"
            return failed(f"transfers to {number!r} are not allowed (allowed: {allowed})")
        if ctx.emit_transfer is not None:
            await ctx.emit_transfer(number)
        if ctx.control is not None:
            try:
                await ctx.control.transfer(number)
            except ToolFailure as exc:
                return failed(str(exc))
        return ToolResult(True, {"transferring_to": number})


async def send_dtmf(arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
    """Out of band when the carrier can, else tones queued in this answer's audio."""
    digits = arguments.get("digits")
    if not isinstance(digits, str):
        return failed("send_dtmf needs 'digits', a string of keys such as '1w2#'")
    try:
        digits = parse_digits(digits)
    except ValueError as exc:
        return failed(f"cannot press {arguments['digits']!r}: {exc}")
    if isinstance(ctx.control, DtmfControl):
        try:
            await ctx.control.send_dtmf(digits)
        except ToolFailure as exc:
            return failed(str(exc))
        return ToolResult(True, {"pressed": digits, "via": "carrier"})
    if ctx.play_dtmf is None:
        return failed("send_dtmf needs a phone call; this conversation is not one")
    await ctx.play_dtmf(digits)
    return ToolResult(True, {"pressed": digits, "via": "tones", "ms": duration_ms(digits)})


def implemented(name: str) -> bool:
    return name in _DEFAULTS


__all__ = ["BuiltinRunner", "implemented"]
