"""What a carrier's endpoints need from the server that hosts them.

The server's routes call into the transports (``server/app.py`` imports them), so
the transports must not import the server back. They name here the little they
use: the configuration, the refusal counter, the stream tickets, whether a new
call may start, and the one way to run a call. ``VantumApp`` satisfies
:class:`SessionHost` structurally; a test can pass anything else that does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

from prometheus_client import Counter

from ..agents.loader import AgentBook
from ..agents.selection import AgentChoice, CallFacts
from ..config import Config
from ..pipeline.settings import CallSettings
from ..pipeline.transport import Transport
from ..protocol.twilio import StreamTickets

if TYPE_CHECKING:
    from .twilio_dial import OutboundDialer


class RefusalMetrics(Protocol):
    @property
    def sessions_refused(self) -> Counter:
        """``vantum_sessions_refused_total{reason}``: a refused call is counted here."""
        ...


class SessionHost(Protocol):
    @property
    def config(self) -> Config: ...

    @property
    def metrics(self) -> RefusalMetrics: ...

    @property
    def stream_tickets(self) -> StreamTickets:
        """Issued by the voice webhook, redeemed (once) by the media stream's ``start``."""
        ...

    def refusal(self) -> tuple[str, int, str] | None:
        """Why a new call must be turned away (event type, close code, message), or None."""
        ...

    @property
    def agents(self) -> AgentBook:
        """The agents calls may run (``--agents``)."""
        ...

    async def call_settings(
        self,
        facts: CallFacts,
        claims: None = None,
        base: None = None,
        choice: AgentChoice | None = None,
    ) -> CallSettings:
        """The settings of the call ``facts`` describe (its agent chosen; may ask the
        resolver; ``choice`` adds variables, e.g. an outbound call's). Raises ``AgentRefused``."""
        ...

    @property
    def dialer(self) -> OutboundDialer:
        """Outbound calls: their status and AMD callbacks land here."""
        ...

    async def serve_session(
        self,
        transport: Transport,
        kind: str,
        settings: CallSettings | None = None,
        *,
        meta: Mapping[str, str] | None = None,
    ) -> None:
        """Run one call on ``transport`` until it ends; ``meta`` goes into its record."""
        ...

    async def carrier_status(
        self, call_sid: str, fields: dict[str, str], *, create_missing: bool = True
    ) -> None:
        """A carrier's status callback for call ``call_sid``: update its record (and,
        with ``create_missing``, give a call that never connected one of its own)."""
        ...
