"""The little mutable state a session's actors share, owned by the session.

Only the ingress actor writes the audio settings and only the responder writes
the response scope and the speaking flags; everything else flows through channels.
"""

from __future__ import annotations

from typing import Protocol

import attrs
import trio


class AudioMeter(Protocol):
    """Where a session reports audio it lost or delivered late (Prometheus, tests).

    A call-long counter in the session would only surface when the call ends; a
    meter shared by all sessions shows a problem while calls are still running.
    """

    def audio_dropped(self, direction: str, reason: str, seconds: float) -> None: ...

    def audio_late(self, direction: str, seconds: float) -> None: ...


class _NoMeter:
    def audio_dropped(self, direction: str, reason: str, seconds: float) -> None:
        pass

    def audio_late(self, direction: str, seconds: float) -> None:
        pass


NO_METER: AudioMeter = _NoMeter()


@attrs.define
class SessionState:
    session_id: str
    client_rate: int | None = None
    language: str = "en-US"
    voice_id: str | None = None
    turn_mode: str = "manual"
    response_scope: trio.CancelScope | None = None
    """Cancel scope of the answer being spoken; cancelling it is a barge-in."""
    speaking: bool = False
    """Answer audio is being played to the caller right now."""
    responding: bool = False
    pending_requests: int = 0
    hangup_reason: str | None = None
    hangup: trio.Event = attrs.Factory(trio.Event)
    meter: AudioMeter = NO_METER

    @property
    def output_rate(self) -> int:
        """Answer audio goes back at the caller's own rate (16 kHz before any start)."""
        return self.client_rate or 16_000

    @property
    def busy(self) -> bool:
        return self.responding or self.pending_requests > 0

    def interrupt(self) -> bool:
        """Barge-in: cancel the answer in progress. True if there was one."""
        if self.response_scope is None or self.response_scope.cancel_called:
            return False
        self.response_scope.cancel()
        return True

    def request_hangup(self, reason: str) -> None:
        """End the call once the answers already queued (e.g. a goodbye) are spoken."""
        self.hangup_reason = reason
        if not self.busy:
            self.hangup.set()
