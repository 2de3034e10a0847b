"""S2S mode beside the cascade, same run, same harness: ``python benchmarks/s2s_vs_cascade.py``.

One process runs a Vantum server, the fake providers and ``--calls`` concurrent
browser-protocol callers doing ``--turns`` manual turns each, first in the cascade
(fake Deepgram → fake OpenAI → fake Cartesia) and then in S2S mode (the fake OpenAI
Realtime server), each fake answering at once. It prints, per mode:

- **added latency**: ``metrics.turn.voiceToVoiceMs`` — from ``audio.input.end`` to
  the first answer audio sent — with providers that take no time of their own, so
  it is what Vantum (and the localhost hops) add (p50 / p95);
- **CPU per call-minute**: the process's CPU seconds over the call-minutes of answer
  audio played. The fakes and the callers run in the same process, so this is an
  upper bound on Vantum's share; compare the two modes, not the absolute value.

It is a smoke-level benchmark (docs/s2s.md quotes it with the machine's load);
the replay benchmark (``replay.py``) is the full one and has no S2S mode yet.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import trio

from vantum.testing.audio_fixtures import speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_cartesia import FakeCartesiaConfig
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.fake_realtime import FakeRealtimeConfig, Say, Scripted
from vantum.testing.stack import open_stack

RATE = 16_000
ANSWER = "Sure, here is a short answer of about two seconds for you."


async def one_call(url: str, turns: int, v2v: list[float], audio_s: list[float]) -> None:
    async with BrowserClient.connect(url) as client:
        for _ in range(turns):
            await client.start(RATE)
            await client.stream_audio(speech_like(1.0, RATE), RATE, realtime=False)
            await client.end_turn()
            turn = await client.collect_turn()
            if turn.metrics.get("voiceToVoiceMs") is not None:
                v2v.append(float(turn.metrics["voiceToVoiceMs"]))
            audio_s.append(turn.audio_seconds)


async def run_mode(mode: str, calls: int, turns: int) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if mode == "s2s":
        script = (Scripted((Say(ANSWER, ms_per_word=180),)),)
        options["realtime"] = FakeRealtimeConfig(script=script, speed=20.0)
    else:
        options["deepgram"] = FakeDeepgramConfig(final_latency=0.0, interim_latency=0.0)
        options["openai"] = FakeOpenAIConfig(
            first_token_latency=0.0, tokens_per_second=5000, responder=lambda _m: ANSWER
        )
        options["cartesia"] = FakeCartesiaConfig(first_chunk_latency=0.0, realtime_factor=50)
    v2v: list[float] = []
    audio_s: list[float] = []
    async with open_stack(**options) as stack:
        cpu0, wall0 = time.process_time(), time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(calls):
                nursery.start_soon(one_call, stack.ws_url, turns, v2v, audio_s)
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    minutes = sum(audio_s) / 60
    q = statistics.quantiles(v2v, n=20) if len(v2v) >= 2 else [float("nan")] * 19
    return {
        "mode": mode,
        "turns": len(v2v),
        "v2v_p50_ms": round(statistics.median(v2v), 1) if v2v else None,
        "v2v_p95_ms": round(q[18], 1),
        "cpu_s_per_call_minute": round(cpu / minutes, 2) if minutes else None,
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--turns", type=int, default=3)
    args = parser.parse_args()
    load = os.getloadavg()[0]
    for mode in ("cascade", "s2s"):
        result = trio.run(run_mode, mode, args.calls, args.turns)
        print({**result, "load1": round(load, 2)})
        load = os.getloadavg()[0]


if __name__ == "__main__":
    main()
