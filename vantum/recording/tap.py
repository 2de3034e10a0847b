"""Taps a call's transport for both sides' audio and writes the recording beside it.

:class:`RecordingTransport` wraps the call's transport: what ``receive()`` returns
(caller audio, the input rate) and what ``send()`` is given (answer audio, the
cut of a barge-in) is noted with its call time and ``send_nowait``\\ ed into a
bounded channel; a full channel drops the audio and counts it, so recording never
slows the call. The writer task places it on a :class:`~.timeline.StereoTimeline`
and appends what is final to the WAV about once a second, in a worker thread.
At the size or duration cap the file stops growing and says ``truncated``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio

from ..audio.resample import StreamResampler
from ..errors import ProtocolError
from ..pipeline import events as e
from ..pipeline.transport import Transport
from ..protocol.client_events import ClientEvent, InputChunk, InputStart
from .timeline import StereoTimeline
from .wavfile import CHANNELS, SAMPLE_BYTES, WavAppender

log = logging.getLogger("vantum.recording")

FLUSH_S = 1.0


@attrs.frozen
class _Audio:
    side: str
    """``caller``, ``agent`` or ``cut``."""
    pcm: bytes
    rate: int
    at: float


@attrs.frozen
class RecordingLimits:
    max_bytes: int = 512 << 20
    max_s: float = 4 * 3600.0


class RecordingTransport:
    """The call's transport, as the session sees it, with the audio noted on the way."""

    def __init__(self, inner: Transport, recording: CallRecording) -> None:
        self._inner = inner
        self._rec = recording
        self.session_id = inner.session_id
        self._input_rate = 0

    def __getattr__(self, name: str) -> Any:  # carrier-specific attributes pass through
        return getattr(self._inner, name)

    async def receive(self) -> ClientEvent | ProtocolError:
        item = await self._inner.receive()
        if isinstance(item, InputChunk) and self._input_rate:
            audio = bytes(len(item.audio)) if item.is_muted else item.audio
            self._rec.note("caller", audio, self._input_rate)
        elif isinstance(item, InputStart):
            self._input_rate = item.sampling_rate
        return item

    async def send(self, event: e.ServerEvent) -> None:
        if isinstance(event, e.OutputChunk):
            self._rec.note("agent", event.pcm, event.rate)
        elif isinstance(event, e.OutputCancelled):
            self._rec.note("cut", b"", 0)
        await self._inner.send(event)

    async def close(self, code: int, reason: str) -> None:
        await self._inner.close(code, reason)


class CallRecording:
    def __init__(
        self,
        call_id: str,
        directory: Path,
        *,
        limits: RecordingLimits | None = None,
        queue_size: int = 512,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.path = directory / f"{call_id}.wav"
        self.limits = limits or RecordingLimits()
        self._clock = clock
        self._t0 = clock()
        self._tx, self._rx = trio.open_memory_channel[_Audio](queue_size)
        self.dropped = 0
        """Audio items the writer could not keep up with (counted, not recorded)."""
        self.truncated = False
        self.rate = 0
        self.data_bytes = 0
        self.failed: str | None = None

    def wrap(self, transport: Transport) -> RecordingTransport:
        return RecordingTransport(transport, self)

    def note(self, side: str, pcm: bytes, rate: int) -> None:
        try:
            self._tx.send_nowait(_Audio(side, pcm, rate, self._clock() - self._t0))
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            self.dropped += 1

    def finish(self) -> None:
        self._tx.close()

    def info(self) -> dict[str, Any]:
        """What the record keeps (``recording.saved``): where and how long."""
        frames = self.data_bytes // (CHANNELS * SAMPLE_BYTES)
        return {
            "path": str(self.path),
            "format": "wav",
            "channels": CHANNELS,
            "sample_rate": self.rate,
            "bytes": self.data_bytes,
            "duration_s": round(frames / self.rate, 3) if self.rate else 0.0,
            "truncated": self.truncated,
            "dropped_chunks": self.dropped,
        }

    async def run_writer(self) -> None:
        """Write until :meth:`finish`, then write the rest (to the call's length)."""
        timeline: StereoTimeline | None = None
        wav: WavAppender | None = None
        resamplers: dict[tuple[str, int], StreamResampler] = {}
        last_flush = 0.0
        try:
            async with self._rx:
                async for item in self._rx:
                    if timeline is None:
                        if item.side == "cut":
                            continue
                        self.rate = item.rate
                        timeline = StereoTimeline(self.rate)
                        wav = await trio.to_thread.run_sync(WavAppender, self.path, self.rate)
                    pcm = item.pcm
                    if item.side != "cut" and item.rate != self.rate:
                        key = (item.side, item.rate)
                        if key not in resamplers:
                            resamplers[key] = StreamResampler(item.rate, self.rate)
                        pcm = resamplers[key].process(pcm)
                    if item.side == "caller":
                        timeline.caller(pcm, item.at)
                    elif item.side == "agent":
                        timeline.agent(pcm, item.at)
                    else:
                        timeline.cut(item.at)
                    if item.at - last_flush >= FLUSH_S:
                        last_flush = item.at
                        await self._append(wav, timeline.take(item.at))
            if timeline is not None:
                await self._append(wav, timeline.finish(self._clock() - self._t0))
        finally:
            if wav is not None:
                with trio.CancelScope(shield=True):
                    await trio.to_thread.run_sync(wav.close)

    async def _append(self, wav: WavAppender | None, frames: bytes) -> None:
        if wav is None or not frames or self.truncated:
            return
        block = CHANNELS * SAMPLE_BYTES
        room = min(
            self.limits.max_bytes - self.data_bytes,
            int(self.limits.max_s * self.rate) * block - self.data_bytes,
        )
        if len(frames) >= room:
            frames = frames[: max(0, room) // block * block]
            self.truncated = True
        await trio.to_thread.run_sync(wav.append, frames)
        self.data_bytes = wav.data_bytes


@asynccontextmanager
async def record_audio(
    call_id: str,
    directory: Path,
    *,
    limits: RecordingLimits | None = None,
    flush_timeout: float = 5.0,
    clock: Callable[[], float] = trio.current_time,
) -> AsyncIterator[CallRecording]:
    """Record the call run inside the block (wrap its transport with ``.wrap``).

    The writer is shielded, like the call records', so a hang-up or a drain still
    leaves the whole file; ``flush_timeout`` bounds that. A disk failure is logged
    and ends the recording, never the call."""
    recording = CallRecording(call_id, directory, limits=limits, clock=clock)
    scope = trio.CancelScope(shield=True)

    async def writer() -> None:
        with scope:
            try:
                await recording.run_writer()
            except OSError as exc:
                recording.failed = str(exc)
                log.warning("call %s: recording failed: %s", call_id, exc)
                recording.finish()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        try:
            yield recording
        finally:
            recording.finish()
            scope.deadline = trio.current_time() + flush_timeout
