"""Call control of a Telnyx call for the agent's tools: Call Control actions.

Like Twilio's (``twilio_control.py``), a media stream cannot end or move its own
call, so ``end_call`` and ``transfer_call`` go through the REST API. Unlike
Twilio, Telnyx presses keys out of band (``actions/send_dtmf``) without touching
the stream, so this control is a :class:`~vantum.tools.base.DtmfControl` and
``send_dtmf`` on a Telnyx call sends no tones of its own.
"""

from __future__ import annotations

import attrs

from ..tools.base import ToolFailure
from .telnyx_rest import TelnyxAPIError, TelnyxREST


@attrs.frozen
class TelnyxCallControl:
    rest: TelnyxREST
    call_control_id: str

    async def hang_up(self) -> None:
        await self.rest.hang_up(self.call_control_id)

    async def transfer(self, target: str) -> None:
        try:
            await self.rest.transfer(self.call_control_id, target)
        except (TelnyxAPIError, ValueError) as exc:
            raise ToolFailure(f"the transfer to {target} failed: {exc}") from exc

    async def send_dtmf(self, digits: str) -> None:
        try:
            await self.rest.send_dtmf(self.call_control_id, digits)
        except (TelnyxAPIError, ValueError) as exc:
            raise ToolFailure(f"pressing {digits} failed: {exc}") from exc


__all__ = ["TelnyxCallControl"]
