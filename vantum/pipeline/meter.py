"""Where a session reports audio it lost or delivered late (Prometheus, tests).

A call-long counter in the session would only surface when the call ends; a meter
shared by all sessions shows a problem while calls are still running. It is the one
object every session shares, and it is write-only for them: nothing in a call reads
it back, so it is not state the actors coordinate through.
"""

from __future__ import annotations

from typing import Protocol


class AudioMeter(Protocol):
    def audio_dropped(self, direction: str, reason: str, seconds: float) -> None: ...

    def audio_late(self, direction: str, seconds: float) -> None: ...


class _NoMeter:
    def audio_dropped(self, direction: str, reason: str, seconds: float) -> None:
        pass

    def audio_late(self, direction: str, seconds: float) -> None:
        pass


NO_METER: AudioMeter = _NoMeter()
