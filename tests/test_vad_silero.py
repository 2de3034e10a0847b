"""The Silero VAD path, on the real model, with speech from the project's own TTS.

The rest of the suite pins WebRTC (tests/conftest.py) because its fixtures are
synthetic buzz; here the audio is eSpeak speech, a pure tone and white noise, and
the engine is chosen per call (``CallSettings(vad=...)``).
"""

from __future__ import annotations

import logging
import sys
import time

import numpy as np
import pytest
import trio
import trio.testing

from vantum.audio import vad
from vantum.audio.resample import StreamResampler
from vantum.audio.vad import (
    SileroClassifier,
    SileroModel,
    VadEngine,
    WebRtcClassifier,
    default_vad_engine,
    load_silero_model,
)
from vantum.pipeline.audio_path import run_audio_path
from vantum.pipeline.messages import (
    AudioItem,
    SttItem,
    TurnInput,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from vantum.pipeline.settings import CallSettings
from vantum.protocol import mulaw
from vantum.providers import local_tts
from vantum.providers.base import Finalize
from vantum.stall import StallMonitor

RATE = 16_000


def espeak(text: str, rate: int = RATE) -> tuple[bytes, float]:
    """eSpeak speech at ``rate`` and where its voice ends (s), trimmed of silence."""
    speech = local_tts.synthesize_blocking(text)
    resampler = StreamResampler(local_tts._ESPEAK.sample_rate, rate)
    pcm = resampler.process(speech.pcm) + resampler.flush()
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    hop = rate // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 0.01)[0]
    lo, hi = int(loud[0]) * hop, int(loud[-1] + 1) * hop
    return x[lo:hi].astype("<i2").tobytes(), (hi - lo) / rate


def zeros(seconds: float, rate: int = RATE) -> bytes:
    return bytes(2 * round(seconds * rate))


def tone(seconds: float) -> bytes:
    t = np.arange(round(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * 10_000).astype("<i2").tobytes()


def noise(seconds: float, seed: int = 1) -> bytes:
    x = np.random.default_rng(seed).standard_normal(round(seconds * RATE)) * 3_000
    return np.clip(x, -32768, 32767).astype("<i2").tobytes()


async def stream(
    pcm: bytes, engine: VadEngine, rate: int = RATE, silence_ms: int = 500
) -> tuple[list[TurnInput], list[SttItem]]:
    """``pcm`` through the audio path in 20 ms chunks, each sent once it was spoken."""
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](8)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](256)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    inbox: list[TurnInput] = []
    stt: list[SttItem] = []

    async def collect_inbox() -> None:
        async for item in inbox_rx:
            inbox.append(item)

    async def collect_stt() -> None:
        async for item in stt_rx:
            stt.append(item)

    settings = CallSettings(rate, turn_mode="auto", silence_ms=silence_ms, vad=engine)
    step = 2 * rate // 50
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_inbox)
        nursery.start_soon(collect_stt)
        nursery.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx, settings)
        async with audio_tx:
            for i in range(0, len(pcm), step):
                await trio.sleep(0.02)
                await audio_tx.send(pcm[i : i + step])
    return inbox, stt


def test_silero_hears_speech_and_not_a_tone_or_noise() -> None:
    speech, _ = espeak("I would like to book a table for two people tonight.")
    model = load_silero_model()
    decisions = SileroClassifier(model).frames(zeros(0.5) + speech + zeros(1.0))
    lead, voice = decisions[:25], decisions[25 : 25 + len(speech) // 640]
    assert not any(lead)
    assert sum(voice) > 0.8 * len(voice)
    for sound in (zeros(0.3) + tone(2.0), zeros(0.3) + noise(2.0)):
        assert not any(SileroClassifier(model).frames(sound))
        # WebRTC's VAD calls at least the onset speech, long enough (60 ms) to start
        # a turn: the reason Silero is the default.
        assert sum(WebRtcClassifier().frames(sound)) >= 3


@pytest.mark.parametrize("rate", [16_000, 8_000])
async def test_a_spoken_turn_ends_silence_ms_after_the_voice(
    autojump_clock: trio.testing.MockClock, rate: int
) -> None:
    speech, voice_s = espeak("Can you tell me the weather in Paris tomorrow?", rate)
    if rate == 8_000:  # a phone line: the mu-law round trip too
        speech = mulaw.decode(mulaw.encode(speech))
    inbox, stt = await stream(zeros(0.5, rate) + speech + zeros(1.5, rate), "silero", rate)
    assert [type(x) for x in inbox] == [VoiceStart, VoiceSustained, VoiceEnd]
    start, _, end = inbox
    assert isinstance(start, VoiceStart) and isinstance(end, VoiceEnd)
    assert 0.5 <= start.at <= 0.5 + 0.2
    voice_end = 0.5 + voice_s
    # 500 ms of silence, plus Silero's hangover (measured ~100 ms) and a 32 ms window.
    assert voice_end + 0.5 <= end.at <= voice_end + 0.5 + 0.2
    assert end.auto_end and abs(end.speech_ms - voice_s * 1000) < 200
    assert sum(isinstance(x, Finalize) for x in stt) == 1


async def test_noise_bursts_and_a_tone_start_no_turn_with_silero(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Without Silero (WebRTC, the old default) the same audio starts turns."""
    sounds = zeros(0.3) + noise(0.3) + zeros(0.7) + tone(1.0) + zeros(0.7) + noise(0.2, 2)
    silero, _ = await stream(sounds + zeros(0.8), "silero")
    webrtc, _ = await stream(sounds + zeros(0.8), "webrtc")
    assert silero == []
    assert sum(isinstance(x, VoiceStart) for x in webrtc) >= 2


async def test_a_pause_shorter_than_silence_ms_does_not_end_the_turn(
    autojump_clock: trio.testing.MockClock,
) -> None:
    first, _ = espeak("I want to fly to")
    second, _ = espeak("Madrid next Tuesday.")
    inbox, _ = await stream(zeros(0.3) + first + zeros(0.35) + second + zeros(1.2), "silero")
    assert [type(x) for x in inbox] == [VoiceStart, VoiceSustained, VoiceEnd]


def test_the_model_is_loaded_once_and_a_call_keeps_little_state() -> None:
    model = load_silero_model()
    assert load_silero_model() is model
    a, b = SileroClassifier(model), SileroClassifier(model)
    speech, _ = espeak("Hello there.")
    a.frames(speech)
    assert not np.array_equal(a._state, b._state)  # each call its own recurrent state
    per_call = a._state.nbytes + a._window.nbytes + len(a._carry)
    assert per_call < 4096
    assert a._window.shape == (1, SileroModel.CONTEXT + SileroModel.WINDOW)


def test_vantum_vad_chooses_the_engine_and_rejects_nonsense() -> None:
    assert default_vad_engine({}) == "silero"
    assert default_vad_engine({"VANTUM_VAD": "silero"}) == "silero"
    assert default_vad_engine({"VANTUM_VAD": "WebRTC"}) == "webrtc"
    with pytest.raises(ValueError, match="silero or webrtc"):
        default_vad_engine({"VANTUM_VAD": "energy"})


def test_without_silero_installed_webrtc_is_used_and_the_log_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails
    monkeypatch.setattr(vad, "_fallback_logged", False)
    with caplog.at_level(logging.WARNING, logger="vantum.audio.vad"):
        assert default_vad_engine({}) == "webrtc"
    assert "Silero VAD unavailable" in caplog.text and "using WebRTC VAD" in caplog.text


async def test_the_silero_audio_path_never_holds_the_event_loop_10_ms(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The done-when of issue 23, on the loop thread's own CPU time (a step the OS
    preempted on a busy machine is not the model's doing)."""
    load_silero_model()  # start-up loads it (vantum serve does, in a thread)
    monitor = StallMonitor(threshold_s=0.010, log_stalls=False, clock=time.thread_time)
    speech, _ = espeak("Please cancel my appointment on Friday, and send me the invoice.")
    trio.lowlevel.add_instrument(monitor)
    try:
        await stream(zeros(0.3) + speech + zeros(0.8), "silero")
    finally:
        trio.lowlevel.remove_instrument(monitor)
    assert monitor.steps > 200  # it watched every chunk's step
    assert monitor.longest_s < 0.010, (monitor.longest_s, monitor.longest_task)


async def test_the_stall_monitor_names_a_task_that_holds_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    monitor = StallMonitor(threshold_s=0.005)

    async def hog() -> None:
        end = time.perf_counter() + 0.02
        while time.perf_counter() < end:  # computes without yielding: a stall
            pass

    trio.lowlevel.add_instrument(monitor)
    try:
        with caplog.at_level(logging.WARNING, logger="vantum.stall"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(hog, name="hog")
    finally:
        trio.lowlevel.remove_instrument(monitor)
    assert monitor.stalls >= 1 and monitor.longest_s >= 0.02
    assert monitor.longest_task == "hog"
    assert "event loop stalled" in caplog.text and "hog" in caplog.text
