"""Turn-taking benchmark: how well each VAD configuration finds turns.

One command (about a minute on one core)::

    .venv/bin/python benchmarks/turn_taking.py            # table on stdout
    .venv/bin/python benchmarks/turn_taking.py --json benchmarks/results/turn_taking.json

Data: everything is generated here, deterministically. Speech comes from the
project's own TTS (eSpeak NG, ``vantum/providers/local_tts.py``; two voices, two
speaking rates); noise is synthesised (clicks, mains hum, music-like chords, noise
bursts, babble of six overlapping TTS voices). Each clip is played on two lines:
``clean`` (16 kHz) and ``phone`` (resampled to 8 kHz, a mu-law round trip as on a
Twilio call, streamed at 8 kHz so the server's own resampler brings it back).

Each clip is streamed in 20 ms chunks through the real audio path
(``vantum.pipeline.audio_path.run_audio_path``, auto mode, ``silenceMs`` 500) under
trio's MockClock, so the event times are the pipeline's own; per configuration:

- **false turn starts**: ``VoiceStart`` on a noise-only clip (per minute of noise);
- **false barge-ins**: noise that passes the VAD half of the barge-in guard
  (``VoiceSustained``: 200 ms said) while the bot speaks, per minute of noise;
  the VAD-only barge-in (1.5 s of speech, no words needed) is counted too;
- **missed barge-ins**: a real interruption said over the bot that does not reach
  ``VoiceSustained`` within 1 s of its first sound;
- **false cut-ins**: a turn with a 250-400 ms pause inside it that the VAD ends in
  the pause (before the caller's true end);
- **end-of-turn latency**: ``VoiceEnd`` after the true end of the voice (energy,
  -40 dB under the clip's peak), p50/p95, complete and cut turns;
- **VAD CPU per call-minute**: the frame classifier alone, CPU seconds per minute
  of audio;
- **longest event-loop step**: a ``StallMonitor`` (vantum/stall.py) watches every
  task step of the runs; the done-when of issue 23 is < 10 ms.

Configurations: ``webrtc+silence`` (WebRTC VAD mode 3, the old default),
``silero+silence`` (Silero VAD v5, the new default) and ``silero+semantic``
(Silero, and Smart Turn v3.2 asked at every pause: issue 23 item 2; needs
``scripts/install-semantic.sh``). For the semantic mode the transcript the turn
manager checks is the clip's own text up to the pause (an ideal recogniser), and
the same run is also scored with the model alone (``silero+semantic-model-only``)
to show what the word check is worth. The model runs in a worker thread as in
production; while it runs the benchmark holds the (mock) clock, then adds the
inference's CPU time (what it takes on a free core; its wall time on a shared
machine, mostly queueing, is in the JSON) to the end-of-turn latency of a turn it
ended. ``silero+silence+dfn``: DeepFilterNet3 (capped at 12 dB) on the VAD's copy
of the audio (issue 23 item 3; needs the ``[denoise]`` extra).
Cut fragments ("a table for") ended before the silence count as false cut-ins
too for that mode. Not real callers: treat the figures as relative.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import trio
import trio.testing

from vantum.audio import denoise, smart_turn
from vantum.audio.resample import StreamResampler
from vantum.audio.vad import VadEngine, load_silero_model, open_classifier
from vantum.pipeline import audio_path
from vantum.pipeline.audio_path import run_audio_path
from vantum.pipeline.endpoint import ends_incomplete
from vantum.pipeline.messages import (
    AudioItem,
    BotSpeaking,
    SttItem,
    TurnInput,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.protocol import mulaw
from vantum.providers import local_tts
from vantum.stall import StallMonitor

RATE = 16_000
Audio = npt.NDArray[np.float64]

COMPLETE = [
    "I would like to book a table for two people tonight.",
    "What time does the pharmacy close on Sundays?",
    "Can you tell me the weather in Paris tomorrow?",
    "My order number is four five six seven.",
    "Please cancel my appointment on Friday.",
    "I need to change the delivery address.",
    "Is there parking near the hotel?",
    "Thanks, that's everything I needed.",
    "How much does the premium plan cost per month?",
    "Could you send me the invoice by email?",
]
CUT = [
    "I'd like to book a table for",
    "The problem is that the",
    "Can you check whether my",
    "I was calling about the",
    "My account number is",
]
PAUSED = [
    ("I want to fly to", "Madrid next Tuesday."),
    ("My name is", "Jordan Smith."),
    ("The card ends in", "four two one one."),
    ("Let me think", "maybe around seven."),
    ("I'm looking for", "a quiet room with a view."),
]
PAUSES_MS = (250, 300, 350, 400)
BACKCHANNELS = ["mm-hm", "yeah", "okay", "right", "uh-huh", "sure"]
INTERRUPTIONS = [
    "Wait, that's not what I said.",
    "No, stop, I meant Tuesday.",
    "Sorry, can you repeat that?",
    "Hold on a second please.",
]
VOICES = (("en-us", 175), ("en-gb-x-rp", 150), ("en-us+f3", 200), ("en-029", 190))
NOISE_S = 20.0


@attrs.frozen
class Clip:
    kind: str
    """complete, cut, paused, backchannel, interruption, noise:<type>"""
    audio: Audio
    """16 kHz, float in [-1, 1]."""
    voice_start: float = 0.0
    voice_end: float = 0.0
    """True end of the voice (s into the clip); for ``paused``, the end of the
    whole turn (after the second part)."""
    pause_at: float = 0.0
    """``paused``: where the pause inside the turn begins."""
    text: str = ""
    """What was said (the ideal transcript the semantic mode's word check sees)."""
    first_text: str = ""
    """``paused``: what was said before the pause."""


def tts(text: str, voice: str, wpm: int) -> Audio:
    speech = local_tts.synthesize_blocking(text, voice=voice, rate_wpm=wpm)
    resampler = StreamResampler(local_tts._ESPEAK.sample_rate, RATE)
    pcm = resampler.process(speech.pcm) + resampler.flush()
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    lo, hi = voiced_span(x)
    return x[max(0, lo - 160) : hi + 160]  # trim eSpeak's own silences


def voiced_span(x: Audio) -> tuple[int, int]:
    """First and last sample of 10 ms frames within 40 dB of the loudest frame."""
    n = len(x) // 160
    rms = np.sqrt(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    loud = np.nonzero(rms > rms.max() * 0.01)[0]
    return int(loud[0]) * 160, int(loud[-1] + 1) * 160


def silence(seconds: float) -> Audio:
    return np.zeros(round(seconds * RATE))


def with_truth(
    kind: str,
    lead: float,
    parts: list[Audio],
    tail: float,
    pause_at: float = 0.0,
    text: str = "",
    first_text: str = "",
) -> Clip:
    body = np.concatenate(parts)
    lo, hi = voiced_span(body)
    audio = np.concatenate([silence(lead), body, silence(tail)])
    return Clip(kind, audio, lead + lo / RATE, lead + hi / RATE, lead + pause_at, text, first_text)


def speech_clips() -> list[Clip]:
    clips: list[Clip] = []
    for voice, wpm in VOICES:
        for text in COMPLETE:
            clips.append(with_truth("complete", 0.5, [tts(text, voice, wpm)], 1.5, text=text))
        for text in CUT:
            clips.append(with_truth("cut", 0.5, [tts(text, voice, wpm)], 1.5, text=text))
        for i, (first, second) in enumerate(PAUSED):
            a, b = tts(first, voice, wpm), tts(second, voice, wpm)
            pause = PAUSES_MS[i % len(PAUSES_MS)] / 1000
            clips.append(
                with_truth(
                    "paused",
                    0.5,
                    [a, silence(pause), b],
                    1.5,
                    pause_at=len(a) / RATE,
                    text=f"{first} {second}",
                    first_text=first,
                )
            )
        for text in BACKCHANNELS:
            clips.append(with_truth("backchannel", 0.5, [tts(text, voice, wpm)], 1.0))
        for text in INTERRUPTIONS:
            clips.append(with_truth("interruption", 0.5, [tts(text, voice, wpm)], 1.0))
    return clips


def normalise(x: Audio, dbfs: float) -> Audio:
    rms = float(np.sqrt(np.mean(x**2))) or 1.0
    return x * (10 ** (dbfs / 20) / rms)


def noise_clips(seed: int = 7) -> list[Clip]:
    rng = np.random.default_rng(seed)
    n = round(NOISE_S * RATE)
    t = np.arange(n) / RATE
    # Clicks: 2-10 ms decaying impulses, ~3 a second, loud.
    clicks = np.zeros(n)
    for at in rng.uniform(0, NOISE_S - 0.02, size=int(NOISE_S * 3)):
        i, width = int(at * RATE), int(rng.uniform(0.002, 0.01) * RATE)
        clicks[i : i + width] += (
            rng.uniform(0.3, 0.9) * np.exp(-np.arange(width) / (width / 4)) * rng.choice([-1, 1])
        )
    # Mains hum with harmonics (50 Hz) and a little noise floor.
    hum = sum(
        np.sin(2 * np.pi * 50 * k * t) / k for k in (1, 2, 3, 5, 7)
    ) + 0.02 * rng.standard_normal(n)
    # Music-like: a chord of three notes (with harmonics) changing every 250-600 ms.
    music = np.zeros(n)
    i = 0
    while i < n:
        length = int(rng.uniform(0.25, 0.6) * RATE)
        tt = np.arange(min(length, n - i)) / RATE
        chord = rng.choice([220.0, 261.6, 293.7, 329.6, 392.0, 440.0, 523.3], size=3)
        env = np.minimum(1, tt / 0.01) * np.exp(-tt * 2)
        music[i : i + len(tt)] = env * sum(
            np.sin(2 * np.pi * f * h * tt) / h for f in chord for h in (1, 2, 3)
        )
        i += length
    # Noise bursts: 100-400 ms of white noise, 1-2 s apart.
    bursts = np.zeros(n)
    at = 0.5
    while at < NOISE_S - 0.5:
        i, width = int(at * RATE), int(rng.uniform(0.1, 0.4) * RATE)
        bursts[i : i + width] = rng.standard_normal(width)
        at += rng.uniform(1.0, 2.0)
    # Babble: six TTS voices talking at once, no one intelligible.
    texts = COMPLETE + CUT
    babble = np.zeros(n)
    for v in range(6):
        voice, wpm = VOICES[v % len(VOICES)]
        track = np.concatenate(
            [tts(texts[(v * 3 + j) % len(texts)], voice, wpm) for j in range(12)]
        )
        track = np.tile(track, 1 + n // len(track))[:n]
        babble += np.roll(track, int(rng.uniform(0, n)))
    out = []
    for name, x, level in (
        ("clicks", clicks, -25.0),
        ("hum", hum, -20.0),
        ("music", music, -20.0),
        ("bursts", bursts, -20.0),
        ("babble", babble, -25.0),
    ):
        out.append(Clip(f"noise:{name}", normalise(x, level)))
    return out


def line(x: Audio, kind: str) -> tuple[bytes, int]:
    """The clip as the server receives it: PCM16 at the line's rate."""
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2").tobytes()
    if kind == "clean":
        return pcm, RATE
    down = StreamResampler(RATE, 8000)
    narrow = down.process(pcm) + down.flush()
    return mulaw.decode(mulaw.encode(narrow)), 8000


@attrs.frozen
class Events:
    starts: list[float]
    sustained: list[VoiceSustained]
    ends: list[VoiceEnd]
    inference_s: list[float] = attrs.Factory(list)
    """Per VoiceEnd: the wall time of the inference that ended it early (else 0)."""


class TimedModel:
    """The real Smart Turn model, timed: the benchmark holds the mock clock while an
    inference runs (virtual time must not run ahead of it) and adds its wall time."""

    def __init__(self, model: smart_turn.SmartTurnModel) -> None:
        self.model = model
        self.busy = 0
        self.wall_s: list[float] = []
        self.cpu_each_s: list[float] = []
        self.cpu_s = 0.0

    def predict(self, pcm16: bytes) -> float:
        self.busy += 1
        t, c = time.perf_counter(), time.thread_time()
        try:
            return self.model.predict(pcm16)
        finally:
            self.cpu_s += time.thread_time() - c
            self.cpu_each_s.append(time.thread_time() - c)
            self.wall_s.append(time.perf_counter() - t)
            self.busy -= 1


TIMED: TimedModel | None = None


class SharedSuppressor:
    """One DeepFilterNet state for the whole run (creating one per clip costs seconds),
    timed and counted busy like the model; its state runs on from clip to clip, as
    in one long call."""

    def __init__(self, atten_db: int) -> None:
        self.suppressor = denoise.DeepFilter(atten_db)
        self.busy = 0
        self.cpu_s = 0.0

    def process(self, pcm16: bytes) -> bytes:
        self.busy += 1
        c = time.thread_time()
        try:
            return self.suppressor.process(pcm16)
        finally:
            self.cpu_s += time.thread_time() - c
            self.busy -= 1

    def close(self) -> None:
        pass  # kept for the next clip


DENOISER: SharedSuppressor | None = None


def busy() -> bool:
    return bool((TIMED is not None and TIMED.busy) or (DENOISER is not None and DENOISER.busy))


async def stream(
    pcm: bytes,
    rate: int,
    engine: VadEngine,
    bot_speaking: bool,
    semantic: bool = False,
    dfn: bool = False,
) -> Events:
    """The clip through the real audio path, 20 ms a chunk, in (mock) real time."""
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](8)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](64)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    policy = TurnPolicy(semantic=semantic, noise_reduction=dfn)
    settings = CallSettings(rate, turn_mode="auto", silence_ms=500, vad=engine, turn=policy)
    events = Events([], [], [])

    async def drain_stt() -> None:
        async for _ in stt_rx:
            pass

    async def collect() -> None:
        async for item in inbox_rx:
            if isinstance(item, VoiceStart):
                events.starts.append(item.at)
            elif isinstance(item, VoiceSustained):
                events.sustained.append(item)
            elif isinstance(item, VoiceEnd):
                events.ends.append(item)
                # The inference's CPU time: what it takes on a free core (its wall time
                # on this shared machine is mostly waiting for one; in the JSON).
                early = item.early_ms > 0 and TIMED is not None and TIMED.cpu_each_s
                events.inference_s.append(TIMED.cpu_each_s[-1] if early and TIMED else 0.0)

    t0 = trio.current_time()
    step = 2 * rate // 50
    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_stt)
        nursery.start_soon(collect)
        nursery.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx, settings)
        async with audio_tx:
            if bot_speaking:
                await audio_tx.send(BotSpeaking(True))
            for i in range(0, len(pcm), step):
                await trio.sleep(0.02)  # the chunk is sent once all of it was spoken
                # Hold virtual time while the model runs: a busy loop on purpose (a
                # task blocked on an Event would let the MockClock jump ahead).
                while TIMED is not None and TIMED.busy:
                    await trio.lowlevel.checkpoint()
                await audio_tx.send(pcm[i : i + step])
    return Events(
        [s - t0 for s in events.starts],
        [attrs.evolve(s, at=s.at - t0) for s in events.sustained],
        [attrs.evolve(e, at=e.at - t0) for e in events.ends],
        events.inference_s,
    )


def turn_ends(ev: Events, clip: Clip, words: bool) -> list[float]:
    """When the turn manager ends the caller's turn, from the audio path's ends: an
    early (semantic) end whose transcript stops mid-phrase waits for the silence
    ceiling, and is no end at all if the caller speaks again before it."""
    out: list[float] = []
    for e, inference in zip(ev.ends, ev.inference_s, strict=True):
        if e.early_ms <= 0:
            out.append(e.at)
            continue
        in_pause = clip.kind == "paused" and e.at < clip.voice_end - 0.05
        said = clip.first_text if in_pause else clip.text
        if not words or not ends_incomplete(said, "en-US"):
            out.append(e.at + inference)
            continue
        ceiling = e.at + e.early_ms / 1000
        if not any(e.at < s <= ceiling for s in ev.starts):
            out.append(ceiling)
    return out


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


Prepared = list[tuple[Clip, bytes, int]]
"""Each clip with its audio as the line delivers it (prepared before the run, so the
stall monitor sees only the pipeline's steps)."""


async def run_config(
    engine: VadEngine,
    line_kind: str,
    clips: Prepared,
    noise: Prepared,
    mode: str = "silence",
) -> list[dict[str, Any]]:
    """One configuration's run: a row, or for ``semantic`` two (with the word check,
    and the same events scored with the model alone)."""
    semantic = mode.startswith("semantic")
    dfn = mode.endswith("+dfn")
    speech_events = []
    for clip, pcm, rate in clips:
        bot = clip.kind in ("backchannel", "interruption")
        speech_events.append((clip, await stream(pcm, rate, engine, bot, semantic, dfn)))
    noise_events = []
    for clip, pcm, rate in noise:
        noise_events.append((clip, await stream(pcm, rate, engine, True, semantic, dfn)))
    rows = [score(engine, line_kind, mode, speech_events, noise_events, words=True)]
    if semantic:
        alone = mode.replace("semantic", "semantic-model-only")
        rows.append(score(engine, line_kind, alone, speech_events, noise_events, False))
    return rows


def score(
    engine: VadEngine,
    line_kind: str,
    mode: str,
    speech_events: list[tuple[Clip, Events]],
    noise_events: list[tuple[Clip, Events]],
    words: bool,
) -> dict[str, Any]:
    latencies: list[float] = []
    latencies_cut: list[float] = []
    missed_ends = 0
    cut_ins = 0
    cut_early = 0
    paused = 0
    missed_barge = 0
    barge_latency: list[float] = []
    backchannel_guard = 0
    for clip, ev in speech_events:
        if clip.kind in ("complete", "cut"):
            ends = [t for t in turn_ends(ev, clip, words) if t > clip.voice_end - 0.05]
            if not ends:
                missed_ends += 1
                continue
            (latencies if clip.kind == "complete" else latencies_cut).append(
                1000 * (ends[0] - clip.voice_end)
            )
            if clip.kind == "cut" and ends[0] - clip.voice_end < 0.45:
                cut_early += 1  # a fragment answered before the silence (500 ms)
        elif clip.kind == "paused":
            paused += 1
            if any(t < clip.voice_end - 0.05 for t in turn_ends(ev, clip, words)):
                cut_ins += 1
        elif clip.kind == "interruption":
            hits = [s.at - clip.voice_start for s in ev.sustained]
            if not hits or hits[0] > 1.0:
                missed_barge += 1
            else:
                barge_latency.append(1000 * hits[0])
        elif clip.kind == "backchannel":
            backchannel_guard += bool(ev.sustained)
    per_noise: dict[str, dict[str, float]] = {}
    total_starts = total_sustained = total_long = 0
    minutes = 0.0
    for clip, ev in noise_events:
        m = len(clip.audio) / RATE / 60
        minutes += m
        long = sum(1 for e in ev.ends if e.speech_ms >= 1500)
        per_noise[clip.kind.split(":")[1]] = {
            "false_starts_per_min": round(len(ev.starts) / m, 1),
            "false_barge_ins_per_min": round(len(ev.sustained) / m, 1),
        }
        total_starts += len(ev.starts)
        total_sustained += len(ev.sustained)
        total_long += long
    clips = [c for c, _ in speech_events]
    return {
        "engine": engine,
        "mode": mode,
        "line": line_kind,
        "false_turn_starts_per_noise_min": round(total_starts / minutes, 1),
        "false_barge_ins_per_noise_min": round(total_sustained / minutes, 1),
        "vad_only_barge_ins_on_noise": total_long,
        "noise": per_noise,
        "false_cut_ins": cut_ins,
        "paused_turns": paused,
        "cut_fragments_ended_early": cut_early,
        "cut_fragments": sum(1 for c in clips if c.kind == "cut"),
        "turns": sum(1 for c in clips if c.kind in ("complete", "cut")),
        "turn_end_missed": missed_ends,
        "end_latency_ms_p50": pct(latencies + latencies_cut, 50),
        "end_latency_ms_p95": pct(latencies + latencies_cut, 95),
        "end_latency_complete_ms_p50": pct(latencies, 50),
        "end_latency_complete_ms_p95": pct(latencies, 95),
        "end_latency_cut_ms_p50": pct(latencies_cut, 50),
        "missed_barge_ins": missed_barge,
        "interruptions": sum(1 for c in clips if c.kind == "interruption"),
        "barge_in_guard_ms_p50": pct(barge_latency, 50),
        "backchannels_passing_vad_guard": backchannel_guard,
        "backchannels": sum(1 for c in clips if c.kind == "backchannel"),
    }


def classifier_cost(engine: VadEngine, clips: list[Clip], line_kind: str) -> dict[str, float]:
    """CPU of the frame classifier alone, and the hangover it adds after the voice."""
    audio_s = 0.0
    cpu = 0.0
    hangovers: list[float] = []
    for clip in clips:
        pcm, rate = line(clip.audio, line_kind)
        if rate != RATE:
            up = StreamResampler(rate, RATE)
            pcm = up.process(pcm) + up.flush()
        classifier = trio.run(open_classifier, engine)
        t = time.process_time()
        decisions = classifier.frames(pcm)
        cpu += time.process_time() - t
        audio_s += len(pcm) / 2 / RATE
        if clip.kind == "complete" and any(decisions):
            last = max(i for i, d in enumerate(decisions) if d)
            hangovers.append(1000 * ((last + 1) * 0.02 - clip.voice_end))
    return {
        "vad_cpu_s_per_call_minute": round(cpu / audio_s * 60, 4),
        "cpu_us_per_20ms_frame": round(cpu / (audio_s / 0.02) * 1e6, 1),
        "hangover_ms_p50": pct(hangovers, 50) or 0.0,
        "hangover_ms_p95": pct(hangovers, 95) or 0.0,
    }


def measure(
    configs: list[tuple[VadEngine, str]], lines: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    global TIMED, DENOISER
    t = time.perf_counter()
    clips = speech_clips()
    noise = noise_clips()
    took = time.perf_counter() - t
    log(f"data: {len(clips)} speech clips, {len(noise)} x {NOISE_S:.0f} s of noise ({took:.1f} s)")
    load_silero_model()
    if any(mode.endswith("+dfn") for _, mode in configs):
        missing = denoise.denoise_unavailable()
        if missing is not None:
            log(f"noise reduction skipped: {missing}")
            configs = [c for c in configs if not c[1].endswith("+dfn")]
        else:
            DENOISER = SharedSuppressor(12)
            shared = DENOISER
            setattr(denoise, "DeepFilter", lambda atten_db: shared)  # noqa: B010
    if any(mode.startswith("semantic") for _, mode in configs):
        missing = smart_turn.smart_turn_unavailable()
        if missing is not None:
            log(f"semantic skipped: {missing}")
            configs = [c for c in configs if not c[1].startswith("semantic")]
        else:
            TIMED = TimedModel(smart_turn.load_smart_turn())
            timed = TIMED
            setattr(audio_path, "load_smart_turn", lambda: timed)  # noqa: B010
    results: list[dict[str, Any]] = []
    for line_kind in lines:
        speech_line = [(c, *line(c.audio, line_kind)) for c in clips]
        noise_line = [(c, *line(c.audio, line_kind)) for c in noise]
        for engine, mode in configs:
            t = time.perf_counter()
            monitor = StallMonitor(threshold_s=0.010, log_stalls=False)
            cpu_monitor = StallMonitor(
                threshold_s=0.010, log_stalls=False, clock=time.thread_time, by_task={}
            )
            model_cpu = TIMED.cpu_s if TIMED else 0.0
            dfn_cpu = DENOISER.cpu_s if DENOISER else 0.0
            model_calls = len(TIMED.wall_s) if TIMED else 0
            rows = trio.run(
                run_config,
                engine,
                line_kind,
                speech_line,
                noise_line,
                mode,
                clock=trio.testing.MockClock(autojump_threshold=0),
                instruments=[monitor, cpu_monitor],
            )
            audio_s = sum(len(p) / 2 / r for _, p, r in speech_line + noise_line)
            model: dict[str, Any] = {}
            if DENOISER is not None and mode.endswith("+dfn"):
                model["denoise_cpu_s_per_call_minute"] = round(
                    (DENOISER.cpu_s - dfn_cpu) / audio_s * 60, 4
                )
            if TIMED is not None and mode.startswith("semantic"):
                walls = TIMED.wall_s[model_calls:]
                model = {
                    "model_cpu_s_per_call_minute": round(
                        (TIMED.cpu_s - model_cpu) / audio_s * 60, 4
                    ),
                    "model_inferences": len(walls),
                    "model_inference_wall_ms_p50": pct([w * 1000 for w in walls], 50),
                    "model_inference_wall_ms_p95": pct([w * 1000 for w in walls], 95),
                    "model_inference_cpu_ms_mean": round(
                        1000 * (TIMED.cpu_s - model_cpu) / max(1, len(walls)), 1
                    ),
                }
            assert cpu_monitor.by_task is not None
            cost = classifier_cost(
                engine, [c for c in clips if c.kind == "complete"] + noise, line_kind
            )
            for row in rows:
                row["loop_steps"] = cpu_monitor.steps
                row["longest_loop_step_cpu_ms"] = round(cpu_monitor.longest_s * 1000, 2)
                row["longest_loop_step_task"] = cpu_monitor.longest_task
                row["longest_audio_path_step_cpu_ms"] = round(
                    1000
                    * cpu_monitor.by_task.get(run_audio_path.__module__ + ".run_audio_path", 0.0),
                    2,
                )
                row["loop_steps_over_10ms_cpu"] = cpu_monitor.stalls
                row["longest_loop_step_wall_ms"] = round(monitor.longest_s * 1000, 2)
                row["loop_steps_over_10ms_wall"] = monitor.stalls
                row.update(cost)
                row.update(model)
                row["cpu_s_per_call_minute"] = round(
                    cost["vad_cpu_s_per_call_minute"]
                    + model.get("model_cpu_s_per_call_minute", 0.0)
                    + model.get("denoise_cpu_s_per_call_minute", 0.0),
                    4,
                )
                results.append(row)
            log(f"{engine}+{mode} {line_kind}: {time.perf_counter() - t:.1f} s")
    return {
        "generated_by": "benchmarks/turn_taking.py",
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "load_average": [round(x, 2) for x in os.getloadavg()],
        },
        "silence_ms": 500,
        "results": results,
    }


COLUMNS = [
    ("false turn starts /noise-min", "false_turn_starts_per_noise_min"),
    ("false barge-ins /noise-min", "false_barge_ins_per_noise_min"),
    ("false cut-ins (pauses)", "false_cut_ins"),
    ("fragments ended early", "cut_fragments_ended_early"),
    ("end latency p50 ms", "end_latency_ms_p50"),
    ("end latency p95 ms", "end_latency_ms_p95"),
    ("missed barge-ins", "missed_barge_ins"),
    ("CPU s /call-min (VAD + model)", "cpu_s_per_call_minute"),
    ("longest audio-path step CPU ms", "longest_audio_path_step_cpu_ms"),
]


def table(report: dict[str, Any]) -> str:
    head = "| configuration | line | " + " | ".join(c for c, _ in COLUMNS) + " |"
    rule = "|" + "---|" * (len(COLUMNS) + 2)
    rows = [head, rule]
    for r in report["results"]:
        cells = []
        for _, key in COLUMNS:
            value = r[key]
            if key == "false_cut_ins":
                value = f"{value}/{r['paused_turns']}"
            elif key == "missed_barge_ins":
                value = f"{value}/{r['interruptions']}"
            elif key == "cut_fragments_ended_early":
                value = f"{value}/{r['cut_fragments']}"
            cells.append(str(value))
        rows.append(f"| {r['engine']}+{r['mode']} | {r['line']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(report: dict[str, Any], line_kind: str = "phone") -> str:
    """Two Mermaid charts (docs/turn-taking.md renders them): end-of-turn latency
    p50 (bars) and p95 (line); false cut-ins, fragments ended early and false turn
    starts per noise-minute, per configuration, on one line."""
    rows = [r for r in report["results"] if r["line"] == line_kind]
    names = ", ".join(f'"{r["engine"]}+{r["mode"]}"' for r in rows)

    def values(key: str) -> str:
        return ", ".join(str(r[key] if r[key] is not None else 0) for r in rows)

    top = max((r["end_latency_ms_p95"] or 0) for r in rows) if rows else 0
    errors = ["false_cut_ins", "cut_fragments_ended_early", "false_turn_starts_per_noise_min"]
    most = max(max(r[k] for k in errors) for r in rows) if rows else 0
    return "\n".join(
        [
            "```mermaid",
            "xychart-beta",
            f'    title "End-of-turn latency ({line_kind} line), ms: p50 bars, p95 line"',
            f"    x-axis [{names}]",
            f'    y-axis "ms" 0 --> {int(top * 1.1) + 1}',
            f"    bar [{values('end_latency_ms_p50')}]",
            f"    line [{values('end_latency_ms_p95')}]",
            "```",
            "",
            "```mermaid",
            "xychart-beta",
            f'    title "Mistakes ({line_kind} line): false cut-ins /20, fragments ended early /20,'
            ' false turn starts per noise-minute"',
            f"    x-axis [{names}]",
            f'    y-axis "count" 0 --> {int(most * 1.2) + 1}',
            *(f"    bar [{values(k)}]" for k in errors),
            "```",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", help="write the full results here")
    parser.add_argument(
        "--configs",
        default="webrtc+silence,silero+silence,silero+semantic,silero+silence+dfn",
        help="engine+mode[+dfn] (engines: webrtc, silero; modes: silence, semantic; "
        "+dfn: DeepFilterNet3 noise reduction on the VAD's audio)",
    )
    parser.add_argument("--lines", default="clean,phone")
    parser.add_argument(
        "--report", help="print the table and charts of an earlier --json file (no run)"
    )
    args = parser.parse_args(argv)
    if args.report:
        with open(args.report) as f:
            done = json.load(f)
        print(table(done))
        for line_kind in dict.fromkeys(r["line"] for r in done["results"]):
            print()
            print(plot(done, line_kind))
        return 0
    configs: list[tuple[VadEngine, str]] = []
    for name in args.configs.split(","):
        engine, _, mode = name.partition("+")
        base = mode.removesuffix("+dfn")
        if engine not in ("webrtc", "silero") or base not in ("silence", "semantic"):
            parser.error(f"unknown configuration {name!r}")
        configs.append(("webrtc" if engine == "webrtc" else "silero", mode))
    report = measure(configs, args.lines.split(","), lambda s: print(s, file=sys.stderr))
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
