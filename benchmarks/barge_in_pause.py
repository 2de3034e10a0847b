"""Speech onset -> the client's answer audio stops, over a real socket (issue 20, item 5).

Runs the server in this process on 127.0.0.1 with the protocol-faithful fakes
(``vantum.testing.stack``) and one browser-protocol caller (``/ws``, auto turns)
per trial. Each trial asks for an answer, lets 0.4-1.0 s of it play, then speaks
over it in real time (20 ms chunks, as a microphone sends them):

* ``noise``: a 150 ms burst the recogniser makes one word of (a cough): the answer
  must pause and then resume whole;
* ``words``: 1.5 s of speech the recogniser makes "no stop right there please" of:
  the answer must pause and then be cancelled.

Measured per trial, on the client's clock: *onset -> pause*, from the instant the
first 20 ms chunk holding speech was sent (the speech in it began up to 20 ms
earlier: add one frame for the worst case) to the arrival of
``audio.output.pause``, after which the page plays nothing of the answer; for
``words`` also *onset -> cancel* (``audio.output.cancel``, when the audio stopped
before pause-then-confirm); for ``noise`` the length of the pause and whether
the audio after ``audio.output.resume`` carried on exactly where the caller's
playback stopped. The client and the server share one process and the machine's
cores, so the figures include the client's own scheduling; the machine's load
average is recorded with them.

The target is the VAD's start latency (60 ms of speech frames) plus one frame.

    python benchmarks/barge_in_pause.py --trials 20 --json benchmarks/results/barge_in_pause.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
from typing import Any

import trio

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_cartesia import FakeCartesiaConfig
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack

RATE = 16_000
FRAME_S = 0.02
VAD_START_S = 0.06
STORY = " ".join(f"Sentence number {i} of a rather long story." for i in range(4))
TURN = speech_like(1.0, RATE, seed=2) + silence(0.6, RATE)


async def talk(client: BrowserClient, pcm: bytes) -> float:
    """Send ``pcm`` in 20 ms chunks at real-time pace; returns when the first went."""
    step = 2 * int(RATE * FRAME_S)
    start = trio.current_time()
    for i in range(0, len(pcm), step):
        await client.send(ev.INPUT_CHUNK, {"audio": pcm[i : i + step]})
        await trio.sleep_until(start + (i // step + 1) * FRAME_S)
    return start


def audio_between(events: list[dict[str, Any]], first: str, last: str | None) -> bytes:
    kinds = [e["eventType"] for e in events]
    start = kinds.index(first)
    end = kinds.index(last) if last is not None else len(kinds)
    return b"".join(
        e["payload"]["audio"] for e in events[start:end] if e["eventType"] == ev.OUTPUT_CHUNK
    )


async def trial(url: str, kind: str, seed: int, rng: random.Random) -> dict[str, Any]:
    interjection = (
        speech_like(0.15, RATE, seed=1000 + seed)
        if kind == "noise"
        else speech_like(1.5, RATE, seed=2000 + seed)
    )
    async with BrowserClient.connect(url) as client:
        await client.start(RATE, turnMode="auto", silenceMs=400)
        await client.stream_audio(TURN, RATE, realtime=False)
        await client.expect(ev.OUTPUT_START)
        row: dict[str, Any] = {"kind": kind}
        with trio.fail_after(30):
            await talk(client, silence(rng.uniform(0.4, 1.0), RATE))
            async with trio.open_nursery() as nursery:

                async def speak() -> None:
                    row["onset"] = trio.current_time()  # its first chunk goes now
                    await talk(client, interjection + silence(15.0, RATE))

                nursery.start_soon(speak)
                pause = await client.expect(ev.OUTPUT_PAUSE)
                row["onset_to_pause_ms"] = (pause["_receivedAt"] - row.pop("onset")) * 1000
                ends = ev.OUTPUT_RESUME if kind == "noise" else ev.OUTPUT_CANCEL
                end = await client.expect(ends)
                row["pause_to_" + ends.rsplit(".", 1)[1] + "_ms"] = (
                    end["_receivedAt"] - pause["_receivedAt"]
                ) * 1000
                if kind == "noise":
                    await client.expect(ev.OUTPUT_COMPLETE)
                    played = round(pause["payload"]["playedMs"] * RATE / 1000) * 2
                    before = audio_between(client.events, ev.OUTPUT_START, ev.OUTPUT_PAUSE)
                    after = audio_between(client.events, ev.OUTPUT_RESUME, None)
                    dropped = before[played:]
                    row["dropped_ms"] = len(dropped) / 2 / RATE * 1000
                    row["resumed_seamlessly"] = after[: len(dropped)] == dropped
                nursery.cancel_scope.cancel()
        kinds = [e["eventType"] for e in client.events]
        row["onset_to_cancel_ms"] = (
            row["onset_to_pause_ms"] + row["pause_to_cancel_ms"]
            if ev.OUTPUT_CANCEL in kinds and "pause_to_cancel_ms" in row
            else None
        )
        return row


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "p50": round(statistics.median(ordered), 1),
        "p95": round(p95, 1),
        "max": round(ordered[-1], 1),
        "n": len(ordered),
    }


async def run(trials: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    dg = FakeDeepgramConfig(
        script=lambda i: (
            "tell me a story" if i == 0 else ("uh" if i % 2 else "stop right there please")
        ),
        final_latency=0.15,
        interim_latency=0.05,
    )
    oa = FakeOpenAIConfig(
        first_token_latency=0.05, tokens_per_second=500, responder=lambda m: STORY
    )
    ca = FakeCartesiaConfig(first_chunk_latency=0.05, realtime_factor=10)
    rows: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    async with open_stack(deepgram=dg, openai=oa, cartesia=ca) as stack:
        for i in range(trials):
            kind = "noise" if i % 2 == 0 else "words"
            rows.append(await trial(stack.ws_url, kind, i, rng))
    noise = [r for r in rows if r["kind"] == "noise"]
    words = [r for r in rows if r["kind"] == "words"]
    return {
        "machine_cores": os.cpu_count(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "target_ms": (VAD_START_S + FRAME_S) * 1000,
        "onset_to_pause_ms": summary([r["onset_to_pause_ms"] for r in rows]),
        "onset_to_pause_worst_case_ms": summary(
            [r["onset_to_pause_ms"] + FRAME_S * 1000 for r in rows]
        ),
        "onset_to_pause_within_target": sum(
            r["onset_to_pause_ms"] + FRAME_S * 1000 <= (VAD_START_S + FRAME_S) * 1000 for r in rows
        ),
        "onset_to_cancel_ms": summary([r["onset_to_cancel_ms"] for r in words]),
        "pause_to_resume_ms": summary([r["pause_to_resume_ms"] for r in noise]),
        "dropped_and_resent_ms": summary([r["dropped_ms"] for r in noise]),
        "resumed_seamlessly": all(r["resumed_seamlessly"] for r in noise),
        "trials": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="half noise, half words")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    # Script entries are chosen by an utterance's first frame, in order of first sight;
    # each trial's interjection is new audio, so odd entries are coughs, even ones words.
    result = trio.run(run, args.trials, args.seed)
    for key in ("onset_to_pause_ms", "onset_to_pause_worst_case_ms", "onset_to_cancel_ms"):
        print(f"{key:32} {result[key]}")
    within = result["onset_to_pause_within_target"]
    print(f"{'within target (worst case)':32} {within} of {len(result['trials'])}")
    print(f"{'pause_to_resume_ms':32} {result['pause_to_resume_ms']}")
    print(f"{'dropped_and_resent_ms':32} {result['dropped_and_resent_ms']}")
    print(f"{'resumed_seamlessly':32} {result['resumed_seamlessly']}")
    print(f"{'target_ms':32} {result['target_ms']}")
    print(f"{'load average (before, after)':32} {result['load_average_1min']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
