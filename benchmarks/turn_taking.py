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

Configurations: ``webrtc+silence`` (WebRTC VAD mode 3, the old default) and
``silero+silence`` (Silero VAD v5, the new default). Not real callers: treat the
figures as relative.
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

from vantum.audio.resample import StreamResampler
from vantum.audio.vad import VadEngine, load_silero_model, open_classifier
from vantum.pipeline.audio_path import run_audio_path
from vantum.pipeline.messages import (
    AudioItem,
    BotSpeaking,
    SttItem,
    TurnInput,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from vantum.pipeline.settings import CallSettings
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
    kind: str, lead: float, parts: list[Audio], tail: float, pause_at: float = 0.0
) -> Clip:
    body = np.concatenate(parts)
    lo, hi = voiced_span(body)
    audio = np.concatenate([silence(lead), body, silence(tail)])
    return Clip(kind, audio, lead + lo / RATE, lead + hi / RATE, lead + pause_at)


def speech_clips() -> list[Clip]:
    clips: list[Clip] = []
    for voice, wpm in VOICES:
        for text in COMPLETE:
            clips.append(with_truth("complete", 0.5, [tts(text, voice, wpm)], 1.5))
        for text in CUT:
            clips.append(with_truth("cut", 0.5, [tts(text, voice, wpm)], 1.5))
        for i, (first, second) in enumerate(PAUSED):
            a, b = tts(first, voice, wpm), tts(second, voice, wpm)
            pause = PAUSES_MS[i % len(PAUSES_MS)] / 1000
            clips.append(
                with_truth("paused", 0.5, [a, silence(pause), b], 1.5, pause_at=len(a) / RATE)
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


async def stream(pcm: bytes, rate: int, engine: VadEngine, bot_speaking: bool) -> Events:
    """The clip through the real audio path, 20 ms a chunk, in (mock) real time."""
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](8)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](64)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    settings = CallSettings(rate, turn_mode="auto", silence_ms=500, vad=engine)
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
                await audio_tx.send(pcm[i : i + step])
    return Events(
        [s - t0 for s in events.starts],
        [attrs.evolve(s, at=s.at - t0) for s in events.sustained],
        [attrs.evolve(e, at=e.at - t0) for e in events.ends],
    )


def pct(xs: list[float], q: float) -> float | None:
    return round(float(np.percentile(xs, q)), 1) if xs else None


Prepared = list[tuple[Clip, bytes, int]]
"""Each clip with its audio as the line delivers it (prepared before the run, so the
stall monitor sees only the pipeline's steps)."""


async def run_config(
    engine: VadEngine, line_kind: str, clips: Prepared, noise: Prepared
) -> dict[str, Any]:
    latencies: list[float] = []
    latencies_cut: list[float] = []
    missed_ends = 0
    cut_ins = 0
    paused = 0
    missed_barge = 0
    barge_latency: list[float] = []
    backchannel_guard = 0
    for clip, pcm, rate in clips:
        bot = clip.kind in ("backchannel", "interruption")
        ev = await stream(pcm, rate, engine, bot)
        if clip.kind in ("complete", "cut"):
            ends = [e.at for e in ev.ends if e.at > clip.voice_end - 0.05]
            if not ends:
                missed_ends += 1
                continue
            (latencies if clip.kind == "complete" else latencies_cut).append(
                1000 * (ends[0] - clip.voice_end)
            )
        elif clip.kind == "paused":
            paused += 1
            if any(e.at < clip.voice_end - 0.05 for e in ev.ends):
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
    for clip, pcm, rate in noise:
        ev = await stream(pcm, rate, engine, bot_speaking=True)
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
    complete = [c for c, _, _ in clips if c.kind in ("complete", "cut")]
    return {
        "engine": engine,
        "line": line_kind,
        "false_turn_starts_per_noise_min": round(total_starts / minutes, 1),
        "false_barge_ins_per_noise_min": round(total_sustained / minutes, 1),
        "vad_only_barge_ins_on_noise": total_long,
        "noise": per_noise,
        "false_cut_ins": cut_ins,
        "paused_turns": paused,
        "turns": len(complete),
        "turn_end_missed": missed_ends,
        "end_latency_ms_p50": pct(latencies + latencies_cut, 50),
        "end_latency_ms_p95": pct(latencies + latencies_cut, 95),
        "end_latency_complete_ms_p50": pct(latencies, 50),
        "end_latency_cut_ms_p50": pct(latencies_cut, 50),
        "missed_barge_ins": missed_barge,
        "interruptions": sum(1 for c, _, _ in clips if c.kind == "interruption"),
        "barge_in_guard_ms_p50": pct(barge_latency, 50),
        "backchannels_passing_vad_guard": backchannel_guard,
        "backchannels": sum(1 for c, _, _ in clips if c.kind == "backchannel"),
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
        "cpu_s_per_call_minute": round(cpu / audio_s * 60, 4),
        "cpu_us_per_20ms_frame": round(cpu / (audio_s / 0.02) * 1e6, 1),
        "hangover_ms_p50": pct(hangovers, 50) or 0.0,
        "hangover_ms_p95": pct(hangovers, 95) or 0.0,
    }


def measure(
    engines: list[VadEngine], lines: list[str], log: Callable[[str], None]
) -> dict[str, Any]:
    t = time.perf_counter()
    clips = speech_clips()
    noise = noise_clips()
    took = time.perf_counter() - t
    log(f"data: {len(clips)} speech clips, {len(noise)} x {NOISE_S:.0f} s of noise ({took:.1f} s)")
    load_silero_model()
    results: list[dict[str, Any]] = []
    for line_kind in lines:
        speech_line = [(c, *line(c.audio, line_kind)) for c in clips]
        noise_line = [(c, *line(c.audio, line_kind)) for c in noise]
        for engine in engines:
            t = time.perf_counter()
            monitor = StallMonitor(threshold_s=0.010, log_stalls=False)
            cpu_monitor = StallMonitor(
                threshold_s=0.010, log_stalls=False, clock=time.thread_time, by_task={}
            )

            row = trio.run(
                run_config,
                engine,
                line_kind,
                speech_line,
                noise_line,
                clock=trio.testing.MockClock(autojump_threshold=0),
                instruments=[monitor, cpu_monitor],
            )
            row["loop_steps"] = cpu_monitor.steps
            row["longest_loop_step_cpu_ms"] = round(cpu_monitor.longest_s * 1000, 2)
            row["longest_loop_step_task"] = cpu_monitor.longest_task
            assert cpu_monitor.by_task is not None
            row["longest_audio_path_step_cpu_ms"] = round(
                1000 * cpu_monitor.by_task.get(run_audio_path.__module__ + ".run_audio_path", 0.0),
                2,
            )
            row["loop_steps_over_10ms_cpu"] = cpu_monitor.stalls
            row["longest_loop_step_wall_ms"] = round(monitor.longest_s * 1000, 2)
            row["loop_steps_over_10ms_wall"] = monitor.stalls
            row.update(
                classifier_cost(
                    engine, [c for c in clips if c.kind == "complete"] + noise, line_kind
                )
            )
            results.append(row)
            log(f"{engine}+silence {line_kind}: {time.perf_counter() - t:.1f} s")
    return {
        "generated_by": "benchmarks/turn_taking.py",
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "silence_ms": 500,
        "results": results,
    }


COLUMNS = [
    ("false turn starts /noise-min", "false_turn_starts_per_noise_min"),
    ("false barge-ins /noise-min", "false_barge_ins_per_noise_min"),
    ("false cut-ins", "false_cut_ins"),
    ("end latency p50 ms", "end_latency_ms_p50"),
    ("end latency p95 ms", "end_latency_ms_p95"),
    ("missed barge-ins", "missed_barge_ins"),
    ("VAD CPU s /call-min", "cpu_s_per_call_minute"),
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
            cells.append(str(value))
        rows.append(f"| {r['engine']}+silence | {r['line']} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", help="write the full results here")
    parser.add_argument("--engines", default="webrtc,silero")
    parser.add_argument("--lines", default="clean,phone")
    args = parser.parse_args(argv)
    engines: list[VadEngine] = [e for e in ("webrtc", "silero") if e in args.engines.split(",")]
    report = measure(engines, args.lines.split(","), lambda s: print(s, file=sys.stderr))
    print(table(report))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
