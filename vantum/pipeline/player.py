"""The TTS player: resamples answer audio to the caller's rate and paces it.

Audio is released at real-time pace with a small lead instead of as fast as the
provider produces it. That keeps the client's buffer short, so a barge-in
silences the bot within one lead interval, and it tells the server how much of
the answer was actually heard. The player returns when the last audio it sent
has played out (by its clock), not when it was sent: until then the bot is still
speaking, for barge-in and for a goodbye before the call closes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from ..audio.resample import StreamResampler
from ..providers.base import TTSAudio, TTSEvent, WordTimestamps
from .events import (
    OutputChunk,
    OutputComplete,
    OutputPaused,
    OutputResumed,
    OutputStarted,
    ServerEvent,
)
from .heard import heard_text


@attrs.define(eq=False)
class PlayerControl:
    """The pause switch of one answer's player, thrown by the responder's reader.

    Like the answer's cancel scope it belongs to the responder (its reader throws it,
    its speaker's player obeys), and it takes effect at once: :meth:`pause` cancels
    whatever the player is waiting for (the next TTS audio, its pacing sleep, the
    play-out at the end) so the pause event leaves without waiting for the next chunk.
    """

    paused: bool = False
    _resumed: trio.Event = attrs.Factory(trio.Event)
    _waiting: trio.CancelScope | None = None

    def pause(self) -> None:
        if self.paused:
            return
        self.paused = True
        self._resumed = trio.Event()
        if self._waiting is not None:
            self._waiting.cancel()

    def resume(self) -> None:
        self.paused = False
        self._resumed.set()

    async def wait_resumed(self) -> None:
        await self._resumed.wait()

    def interruptible(self) -> trio.CancelScope:
        """A scope for one wait that a pause cuts short (check ``paused`` after it)."""
        scope = trio.CancelScope()
        if self.paused:
            scope.cancel()
        self._waiting = scope
        return scope


@attrs.define
class Playback:
    """What one answer's player has sent so far."""

    utterance_id: str
    rate: int
    started_at: float | None = None
    sent_samples: int = 0
    words: list[tuple[str, float, float]] = attrs.Factory(list)
    underruns: int = 0
    """Times the caller's buffer ran dry mid-answer (audio reached us too late)."""
    late_seconds: float = 0.0
    """Total silence those underruns put into the answer."""
    synthesis_done: bool = False
    """The TTS produced all of the answer's audio (its stream ended)."""
    withdrawn_seconds: float = 0.0
    """While paused: audio that was sent and that the caller dropped unplayed at the
    pause (no longer in ``sent_samples``; sent again if the answer resumes)."""

    @property
    def sent_seconds(self) -> float:
        return self.sent_samples / self.rate

    def heard_seconds(self, now: float) -> float:
        """Seconds of this answer the caller has heard by ``now`` (trio time)."""
        if self.started_at is None:
            return 0.0
        return max(0.0, min(self.sent_seconds, now - self.started_at))

    def heard_text(self, heard: float, full_text: str) -> str:
        """The part of ``full_text`` in the first ``heard`` seconds of this answer
        (the clock's estimate, :meth:`heard_seconds`, or what the carrier confirmed);
        see :mod:`.heard`."""
        return heard_text(
            full_text,
            heard,
            self.words,
            audio_seconds=self.sent_seconds,
            synthesis_done=self.synthesis_done,
        )


UNDERRUN_TOLERANCE_S = 0.005
"""Scheduling noise below this is not counted as a gap the caller could hear."""


async def play(
    audio: trio.MemoryReceiveChannel[TTSEvent],
    out: trio.MemorySendChannel[ServerEvent],
    playback: Playback,
    *,
    source_rate: int,
    lead: float,
    chunk_ms: int,
    on_first_audio: Callable[[], Awaitable[None]] | None = None,
    on_tts_audio: Callable[[], None] | None = None,
    on_late: Callable[[float], None] | None = None,
    control: PlayerControl | None = None,
) -> None:
    """Send ``audio`` to the caller as ``audio.output.*`` events, paced to real time.

    ``control`` pauses it: no chunk is sent while paused; the caller is told
    (``OutputPaused``) and drops what it had buffered, so on resumption the audio from
    the last instant it played is sent again (``OutputResumed``, then those chunks).
    """
    control = control or PlayerControl()
    resampler = StreamResampler(source_rate, playback.rate)
    chunk_bytes = 2 * max(1, playback.rate * chunk_ms // 1000)
    pending = bytearray()
    # The tail of what was sent: the caller may drop up to a lead and a chunk of it
    # at a pause, and that part is sent again on resumption.
    keep_bytes = 2 * int(playback.rate * (lead + 2 * chunk_ms / 1000)) + chunk_bytes
    recent = bytearray()

    async def hold() -> None:
        """Paused: tell the caller, rewind to what it played, wait, then replay."""
        if playback.started_at is None:
            await control.wait_resumed()  # nothing sent yet: only the start waits
            return
        now = trio.current_time()
        heard = int(playback.heard_seconds(now) * playback.rate)
        unplayed = min(playback.sent_samples - heard, len(recent) // 2)
        replay = bytes(recent[len(recent) - 2 * unplayed :]) if unplayed else b""
        del recent[len(recent) - len(replay) :]
        playback.sent_samples -= unplayed
        playback.withdrawn_seconds = unplayed / playback.rate
        played_ms = playback.sent_samples * 1000 / playback.rate
        await out.send(OutputPaused(playback.utterance_id, played_ms))
        await control.wait_resumed()
        playback.withdrawn_seconds = 0.0
        # The caller's buffer is empty: pacing restarts now, with no underrun counted.
        playback.started_at = trio.current_time() - playback.sent_seconds
        await out.send(OutputResumed(playback.utterance_id, played_ms))
        for i in range(0, len(replay), chunk_bytes):
            await send_chunk(replay[i : i + chunk_bytes])

    async def wait_until(when: float) -> None:
        """Sleep until ``when``, holding whenever a pause comes first."""
        while True:
            if control.paused:
                await hold()
                return
            with control.interruptible():
                await trio.sleep_until(when)
                return

    async def send_chunk(pcm: bytes) -> None:
        if control.paused:
            await hold()
        now = trio.current_time()
        if playback.started_at is None:
            playback.started_at = now
            if on_first_audio is not None:
                await on_first_audio()
            await out.send(OutputStarted(playback.utterance_id, _wall_ms()))
        else:
            # A positive gap means everything sent so far has played out and the caller
            # heard silence; their player resumes with this chunk, so our clock moves too.
            gap = now - (playback.started_at + playback.sent_seconds)
            if gap > UNDERRUN_TOLERANCE_S:
                playback.underruns += 1
                playback.late_seconds += gap
                playback.started_at += gap
                if on_late is not None:
                    on_late(gap)
        while True:
            due = playback.started_at + playback.sent_seconds - lead
            if due <= trio.current_time():
                break
            await wait_until(due)  # after a pause, pacing restarted: compute again
        await out.send(OutputChunk(playback.utterance_id, pcm, playback.rate))
        playback.sent_samples += len(pcm) // 2
        recent.extend(pcm)
        if len(recent) > keep_bytes:
            del recent[: len(recent) - keep_bytes]

    async def next_item() -> TTSEvent | None:
        """The next TTS event (None at the end); a pause is served while waiting."""
        while True:
            if control.paused:
                await hold()
            with control.interruptible():
                try:
                    return await audio.receive()
                except trio.EndOfChannel:
                    return None

    async with audio:
        while (item := await next_item()) is not None:
            if isinstance(item, WordTimestamps):
                for w, s, e in zip(item.words, item.start, item.end, strict=False):
                    playback.words.append((w, s, e))
                continue
            if isinstance(item, TTSAudio):
                if on_tts_audio is not None:
                    on_tts_audio()
                pending += resampler.process(item.pcm)
                if 0 < len(pending) < chunk_bytes and _short_of_a_chunk(playback, chunk_ms):
                    # The caller is waiting for the answer, or has less than a chunk
                    # left to play: send what there is rather than wait for a whole
                    # chunk (the resampler's filter delay alone holds back part of the
                    # provider's first chunk, and a large chunk_ms would starve the
                    # caller while it fills).
                    await send_chunk(bytes(pending))
                    pending.clear()
                    continue
                if len(pending) < chunk_bytes:
                    continue
                view = memoryview(pending)
                sent = 0
                try:
                    while len(pending) - sent >= chunk_bytes:
                        await send_chunk(view[sent : sent + chunk_bytes].tobytes())
                        sent += chunk_bytes
                finally:
                    view.release()
                    del pending[:sent]
    playback.synthesis_done = True
    pending += resampler.flush()
    if pending:
        await send_chunk(bytes(pending))
    if playback.started_at is not None:
        # Pacing, not synchronisation: the answer is over when its audio has played
        # (a pause on the way moves that end: ask again after it).
        while trio.current_time() < playback.started_at + playback.sent_seconds:
            await wait_until(playback.started_at + playback.sent_seconds)
        await out.send(OutputComplete(playback.utterance_id))


def _short_of_a_chunk(playback: Playback, chunk_ms: int) -> bool:
    """Whether the caller has less than one chunk of this answer left to play."""
    if playback.started_at is None:
        return True
    ahead = playback.started_at + playback.sent_seconds - trio.current_time()
    return ahead < chunk_ms / 1000


def _wall_ms() -> int:
    return int(time.time() * 1000)
