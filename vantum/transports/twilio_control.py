"""Call control of a Twilio call: the REST API's Call resource (``TwilioREST``).

A media stream cannot end or move its own call; ``end_call`` completes the call
and ``transfer_call`` redirects it to ``<Dial>`` through the REST client, after
which Twilio ends the stream itself.
"""

from __future__ import annotations

import attrs

from ..tools.base import ToolFailure
from .twilio_rest import TwilioAPIError, TwilioREST


@attrs.frozen
class TwilioCallControl:
    rest: TwilioREST
    call_sid: str

    async def hang_up(self) -> None:
        await self.rest.hang_up(self.call_sid)

    async def transfer(self, target: str) -> None:
        try:
            await self.rest.transfer(self.call_sid, target)
        except (TwilioAPIError, ValueError) as exc:
            raise ToolFailure(f"the transfer to {target} failed: {exc}") from exc


__all__ = ["TwilioCallControl"]
