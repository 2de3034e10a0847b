"""Both sides of a call placed in call time, as the caller heard it: pure, no I/O.

Caller audio is a continuous stream paced by the caller's own clock, so each chunk
follows the previous one, however the network bunched them; only when the caller
has sent nothing for ``gap_s`` (on hold, or gone quiet without sending) does the
next chunk start where it arrived, the gap becoming silence. Placing every chunk at
its arrival would shift the rest of the call later after every network hiccup.

Agent audio is sent ahead of real time (the player's lead), so a chunk plays when
the previous one ends, or when it is sent if the agent was silent. A barge-in
(:meth:`StereoTimeline.cut`) silences every agent sample scheduled after the cut:
it was sent but never played. Audio is handed out (:meth:`take`) only once it is
``hold_s`` in the past, since a cut can still change the most recent moments; so
at most ``hold_s`` plus the agent's lead is held, whatever the call's length.
"""

from __future__ import annotations

import numpy as np


class StereoTimeline:
    def __init__(
        self, rate: int, *, hold_s: float = 0.5, max_ahead_s: float = 5.0, gap_s: float = 1.0
    ) -> None:
        self.rate = rate
        self.gap = round(gap_s * rate)
        self.hold = round(hold_s * rate)
        self.max_ahead = round(max_ahead_s * rate)
        """Caller audio more than this far ahead of the clock (sent faster than real
        time) is dropped and counted rather than held."""
        self.taken = 0
        """Frames handed out so far: the buffers start at this frame."""
        self._left = np.zeros(0, dtype="<i2")
        self._right = np.zeros(0, dtype="<i2")
        self._caller_end = 0
        self._agent_end = 0
        self.dropped_frames = 0

    def _frame(self, at: float) -> int:
        return round(at * self.rate)

    def _place(self, buf: np.ndarray, start: int, samples: np.ndarray) -> np.ndarray:
        offset = start - self.taken
        end = offset + len(samples)
        if end > len(buf):
            # Grow geometrically: growing by each chunk would copy the whole held
            # audio 50 times a second. Room past the written audio is silence.
            grown = np.zeros(max(end, 2 * len(buf), self.rate // 4), dtype="<i2")
            grown[: len(buf)] = buf
            buf = grown
        buf[offset:end] = samples
        return buf

    def caller(self, pcm: bytes, at: float) -> None:
        """Caller audio received at ``at`` (seconds of call time); a muted chunk is
        passed as silence of its length, so it keeps its place."""
        samples = np.frombuffer(pcm, dtype="<i2")
        start = max(self._caller_end, self.taken)
        arrived = self._frame(at) - len(samples)
        if arrived - start > self.gap:
            start = arrived
        if start + len(samples) > self._frame(at) + self.max_ahead:
            self.dropped_frames += len(samples)
            return
        self._left = self._place(self._left, start, samples)
        self._caller_end = start + len(samples)

    def agent(self, pcm: bytes, at: float) -> None:
        """Agent audio sent at ``at``: it plays after what was sent before it."""
        samples = np.frombuffer(pcm, dtype="<i2")
        start = max(self._agent_end, self._frame(at), self.taken)
        self._right = self._place(self._right, start, samples)
        self._agent_end = start + len(samples)

    def cut(self, at: float) -> None:
        """A barge-in at ``at``: agent audio scheduled after it was never heard."""
        frame = max(self._frame(at), self.taken)
        if self._agent_end > frame:
            offset = frame - self.taken
            self._right[offset:] = 0
            self._agent_end = frame

    def take(self, now: float) -> bytes:
        """Interleaved stereo PCM16 up to ``hold_s`` before ``now``, final from here on."""
        return self._take_until(self._frame(now) - self.hold)

    def finish(self, end: float) -> bytes:
        """Everything up to the call's end at ``end``: the call's length exactly.
        Agent audio scheduled past the end was not heard; caller audio is kept."""
        end_frame = max(self._frame(end), self._caller_end)
        return self._take_until(end_frame)

    def _take_until(self, frame: int) -> bytes:
        n = frame - self.taken
        if n <= 0:
            return b""
        stereo = np.zeros((n, 2), dtype="<i2")
        left, right = self._left[:n], self._right[:n]
        stereo[: len(left), 0] = left
        stereo[: len(right), 1] = right
        self._left, self._right = self._left[n:], self._right[n:]
        self.taken = frame
        return stereo.tobytes()
