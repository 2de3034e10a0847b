"""Egress ordering of answer audio for any timing of TTS chunks (hypothesis + MockClock)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.pipeline.events import ServerEvent
from vantum.pipeline.player import UNDERRUN_TOLERANCE_S, Playback, play
from vantum.protocol import events as ev
from vantum.providers.base import TTSAudio, TTSEvent
from vantum.transports.browser_wire import WireEvent, to_wire

RATE = 16_000


def ramp(start: int, n: int) -> bytes:
    """Samples that count up, so order and completeness can be read back from the audio."""
    return (np.arange(start, start + n) % 30000).astype("<i2").tobytes()


def play_timed(
    pieces: Sequence[tuple[float, bytes]],
    playback: Playback,
    *,
    lead: float,
    chunk_ms: int,
    buffer: int = 64,
) -> list[tuple[float, WireEvent]]:
    """Run the player in virtual time on TTS ``pieces`` (wait this long, then send this
    audio); returns what it sent in its documented wire form, with the (virtual) time
    each event left."""
    sent: list[tuple[float, WireEvent]] = []

    async def main() -> None:
        tts_tx, tts_rx = trio.open_memory_channel[TTSEvent](buffer)
        out_tx, out_rx = trio.open_memory_channel[ServerEvent](buffer)

        async def tts() -> None:
            async with tts_tx:
                for gap, pcm in pieces:
                    await trio.sleep(gap)
                    await tts_tx.send(TTSAudio(pcm))

        async def egress() -> None:
            async for event in out_rx:
                sent.append((trio.current_time(), to_wire(event)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tts)
            nursery.start_soon(egress)
            async with out_tx:
                await play(tts_rx, out_tx, playback, source_rate=RATE, lead=lead, chunk_ms=chunk_ms)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return sent


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=25),
    gaps=st.lists(st.floats(0, 0.3), min_size=25, max_size=25),
    lead=st.sampled_from([0.0, 0.1, 0.2]),
)
def test_chunks_leave_in_order_complete_and_paced(
    sizes: list[int], gaps: list[float], lead: float
) -> None:
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    timed = zip(starts, sizes, gaps, strict=False)  # gaps may be longer than sizes
    pieces = [(gap, ramp(start, size)) for start, size, gap in timed]
    sent = play_timed(pieces, Playback("u1", RATE), lead=lead, chunk_ms=40, buffer=4)

    kinds = [e.event_type for _, e in sent]
    assert kinds[0] == ev.OUTPUT_START
    assert kinds[-1] == ev.OUTPUT_COMPLETE
    assert set(kinds[1:-1]) == {ev.OUTPUT_CHUNK}
    assert all(e.payload["utteranceId"] == "u1" for _, e in sent)
    audio = b"".join(e.payload["audio"] for _, e in sent if e.event_type == ev.OUTPUT_CHUNK)
    assert audio == ramp(0, sum(sizes))  # nothing lost, duplicated or reordered
    # Pacing: a chunk never leaves earlier than its real-time position minus the lead.
    t0 = sent[0][0]
    played = 0
    for t, e in sent:
        if e.event_type == ev.OUTPUT_CHUNK:
            assert t >= t0 + played / RATE - lead - 1e-9
            played += len(e.payload["audio"]) // 2
    # The answer is complete when its audio has played out, not when it was sent.
    assert sent[-1][0] >= t0 + played / RATE - 1e-9


FIRST = RATE * 12 // 25  # 0.48 s


class _Meter:
    def __init__(self) -> None:
        self.late: list[tuple[str, float]] = []

    def audio_dropped(self, direction: str, reason: str, seconds: float) -> None:
        raise AssertionError("the player never drops audio")

    def audio_late(self, direction: str, seconds: float) -> None:
        self.late.append((direction, seconds))


@settings(max_examples=40, deadline=None)
@given(
    stall=st.floats(0.0, 1.0).filter(lambda s: abs(s - UNDERRUN_TOLERANCE_S) > 1e-6),
    lead=st.sampled_from([0.0, 0.1, 0.2]),
)
def test_a_stalled_provider_is_counted_as_one_underrun_of_the_gap(
    stall: float, lead: float
) -> None:
    """0.48 s of audio, then none until 0.48 s + ``stall``: the caller hears ``stall`` of silence.

    Whatever the lead, the client starts playing at the first chunk, so the first part
    (a whole number of 40 ms chunks, so none is held back) has played out at t = 0.48 s.
    """
    meter = _Meter()
    playback = Playback("u1", RATE)

    async def main() -> None:
        tts_tx, tts_rx = trio.open_memory_channel[TTSEvent](64)
        out_tx, out_rx = trio.open_memory_channel[ServerEvent](64)

        async def tts() -> None:
            async with tts_tx:
                await tts_tx.send(TTSAudio(ramp(0, FIRST)))
                await trio.sleep(0.48 + stall)  # the first part plays out, then silence
                await tts_tx.send(TTSAudio(ramp(FIRST, FIRST)))

        async def egress() -> None:
            async for _ in out_rx:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(tts)
            nursery.start_soon(egress)
            async with out_tx:
                await play(
                    tts_rx,
                    out_tx,
                    playback,
                    source_rate=RATE,
                    lead=lead,
                    chunk_ms=40,
                    on_late=lambda s: meter.audio_late("out", s),
                )

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    if stall > UNDERRUN_TOLERANCE_S:
        assert playback.underruns == 1
        assert abs(playback.late_seconds - stall) < 1e-6
        assert meter.late == [("out", playback.late_seconds)]
    else:
        assert playback.underruns == 0 and meter.late == []
    assert playback.sent_samples == 2 * FIRST  # nothing was lost, only late


def test_large_chunks_never_starve_the_caller_while_they_fill() -> None:
    """With 100 ms chunks and a TTS delivering 40 ms pieces at 4x real time, the player
    sends pieces as they come until the caller has a chunk in hand, then coalesces."""
    piece = RATE * 40 // 1000
    playback = Playback("u1", RATE)
    pieces = [(0.0 if i == 0 else 0.01, ramp(i * piece, piece)) for i in range(50)]  # 2 s
    sent = play_timed(pieces, playback, lead=0.2, chunk_ms=100)
    assert playback.underruns == 0
    chunks = [(t, e) for t, e in sent if e.event_type == ev.OUTPUT_CHUNK]
    assert b"".join(e.payload["audio"] for _, e in chunks) == ramp(0, 50 * piece)
    t0, played = chunks[0][0], 0.0
    ahead = []
    for t, e in chunks:
        ahead.append(t0 + played - t)
        played += len(e.payload["audio"]) / 2 / RATE
    # The caller never had less than a TTS piece's worth minus its 10 ms spacing in hand.
    assert min(ahead[1:]) >= 0.03 - 1e-9
    assert len(chunks) <= 4 + 2.0 / 0.1  # the rest went out coalesced into 100 ms chunks
