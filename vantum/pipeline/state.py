"""The little mutable state a session's actors share, owned by the session.

Only the ingress actor writes the audio settings and only the responder writes
the response scope; everything else flows through channels.
"""

from __future__ import annotations

import attrs
import trio


@attrs.define
class SessionState:
    session_id: str
    client_rate: int | None = None
    language: str = "en-US"
    voice_id: str | None = None
    turn_mode: str = "manual"
    response_scope: trio.CancelScope | None = None
    """Cancel scope of the answer being spoken; cancelling it is a barge-in."""
    turns: int = 0

    @property
    def output_rate(self) -> int:
        """Answer audio goes back at the caller's own rate (16 kHz before any start)."""
        return self.client_rate or 16_000
