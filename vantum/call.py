"""``vantum call FILE.wav``: speak a WAV to a server and save what it answers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio

from .audio.wav import read_wav, write_wav
from .testing.browser_client import BrowserClient, TurnResult


async def run_call(
    wav: Path,
    url: str,
    fast: bool,
    out: Path,
    turns: int,
    as_json: bool,
    token: str | None = None,
) -> int:
    pcm, rate = read_wav(wav)
    results = []
    answer = bytearray()
    answer_rate = rate
    async with BrowserClient.connect(url, token=token) as client:
        if not as_json:
            print(f"connected: session {client.session_id}")
        for turn in range(1, turns + 1):
            await client.start(rate)
            if not as_json:
                print(
                    f"turn {turn}: speaking {len(pcm) / 2 / rate:.2f} s of {wav.name}"
                    f"{' (fast)' if fast else ''} ..."
                )
            result, sent_end = await _speak(client, pcm, rate, fast)
            answer += result.audio
            answer_rate = result.sample_rate or rate
            client_v2v = (
                round((result.first_audio_at - sent_end) * 1000, 1)
                if result.first_audio_at is not None
                else None
            )
            summary: dict[str, Any] = {
                "turn": turn,
                "transcript": " ".join(result.finals),
                "answer": " ".join(result.text),
                "answerSeconds": round(result.audio_seconds, 2),
                "errors": [
                    e["eventType"] + ": " + e["payload"].get("message", "") for e in result.errors
                ],
                "latencyMs": {**result.metrics, "clientVoiceToVoiceMs": client_v2v},
            }
            results.append(summary)
            if not as_json:
                print(f"  you said : {summary['transcript']!r}")
                print(f"  answer   : {summary['answer']!r} ({summary['answerSeconds']} s of audio)")
                for err in summary["errors"]:
                    print(f"  error    : {err}")
                print(
                    "  latency  : "
                    + ", ".join(
                        f"{k}={v}" for k, v in summary["latencyMs"].items() if k != "utteranceId"
                    )
                )
    write_wav(out, bytes(answer), answer_rate)
    if as_json:
        print(json.dumps({"sessionId": client.session_id, "turns": results, "answerWav": str(out)}))
    else:
        print(f"answer audio saved to {out}")
    return 0


async def _speak(
    client: BrowserClient, pcm: bytes, rate: int, fast: bool
) -> tuple[TurnResult, float]:
    """Stream one turn while collecting its answer; returns it and the end-of-speech time."""
    got: list[TurnResult] = []

    async def collect() -> None:
        got.append(await client.collect_turn())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect)
        await client.stream_audio(pcm, rate, realtime=not fast)
        sent_end = await client.end_turn()
    return got[0], sent_end
