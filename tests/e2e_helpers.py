"""Shared pieces of the end-to-end tests: fast fake configs and a turn driver."""

from __future__ import annotations

from typing import Any

import trio

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient, TurnResult
from vantum.testing.fake_cartesia import FakeCartesiaConfig
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.raw_ws import RawWebSocket

FAST_DG = FakeDeepgramConfig(
    script=("hello there", "what time is it", "thanks a lot"),
    final_latency=0.02,
    interim_latency=0.01,
)


def short_reply(messages: list[dict[str, object]]) -> str:
    """Keeps answers around a second of audio so real-time pacing keeps tests quick."""
    return f"You said: {messages[-1]['content']}. ||BREAK|| Okay."


FAST_OA = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000, responder=short_reply)
FAST_CA = FakeCartesiaConfig(first_chunk_latency=0.01, realtime_factor=50)


async def speak_turn(
    client: BrowserClient, rate: int, seconds: float = 1.0, **start: Any
) -> TurnResult:
    """One manual turn: start (``start`` adds ``audio.input.start`` fields), speech + a
    little silence, end; collect the answer."""
    await client.start(rate, **start)
    result: list[TurnResult] = []
    async with trio.open_nursery() as nursery:

        async def collect() -> None:
            result.append(await client.collect_turn())

        nursery.start_soon(collect)
        await client.stream_audio(
            speech_like(seconds, rate) + silence(0.2, rate), rate, realtime=False
        )
        await client.end_turn()
    return result[0]


def check_answer_events(turn: TurnResult) -> None:
    """docs/protocol.md ordering rules for one answer."""
    kinds = [e["eventType"] for e in turn.events]
    (uid,) = turn.utterance_ids
    answer = [e for e in turn.events if "utteranceId" in e.get("payload", {})]
    assert all(e["payload"]["utteranceId"] == uid for e in answer)
    assert kinds.index(ev.RESPONSE_START) < kinds.index(ev.OUTPUT_START)
    first_chunk = kinds.index(ev.OUTPUT_CHUNK)
    last_chunk = len(kinds) - 1 - kinds[::-1].index(ev.OUTPUT_CHUNK)
    assert kinds.index(ev.OUTPUT_START) < first_chunk
    assert last_chunk < kinds.index(ev.OUTPUT_COMPLETE) < kinds.index(ev.RESPONSE_COMPLETE)
    assert kinds[-1] == ev.METRICS_TURN
    transcripts = [i for i, k in enumerate(kinds) if k.startswith("transcript.")]
    assert max(transcripts, default=-1) < kinds.index(ev.RESPONSE_START)


LONG_STORY = "Once upon a time there was a very long story that went on and on. " * 200
"""About 13 000 characters: minutes of answer audio, far more than any socket buffer."""
LONG_OA = FakeOpenAIConfig(
    first_token_latency=0.01, tokens_per_second=5000, responder=lambda messages: LONG_STORY
)
SMALL_RCVBUF = 4096
"""The non-reading peers' SO_RCVBUF: the server's writes block after a few KiB."""


async def stop_reading_mid_answer(peer: RawWebSocket) -> None:
    """Ask for a long answer, read until its audio starts, then never read again."""
    await peer.read_ack()
    await peer.send_event(ev.TEXT_INPUT, {"text": "tell me a long story"})
    while (await peer.receive_event())["eventType"] != ev.OUTPUT_CHUNK:
        pass
