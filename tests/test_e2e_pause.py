"""Pause, then confirm (issue 20, item 5) over real sockets against the fakes.

A noise burst over the answer pauses it (``audio.output.pause`` on ``/ws``,
``voicechat.response.stop`` with ``reason: paused`` on ``/voicechat/ws``, ``clear`` on
a Twilio stream) and, not
being a barge-in, resumes it: the answer completes and the caller has been sent all
of its audio, the part it dropped at the pause again. A real barge-in pauses at once
and then cancels.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from e2e_helpers import FAST_CA

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.fake_twilio import FakeTwilioConfig, place_call
from vantum.testing.stack import open_stack
from vantum.testing.voicechat_client import RESPONSE_CHUNK, RESPONSE_START, VoicechatClient

RATE = 16_000
STORY = " ".join(f"Sentence number {i} of a story." for i in range(4))
OA = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000, responder=lambda m: STORY)
DG = FakeDeepgramConfig(
    script=("tell me a story", "uh", "no stop right there please"),
    final_latency=0.02,
    interim_latency=0.01,
)
TURN = speech_like(1.0, RATE, seed=2) + silence(0.6, RATE)
BURST = speech_like(0.15, RATE, seed=5)
"""A cough: the recogniser makes one word of it, the VAD 150 ms of speech."""
WORDS = speech_like(1.5, RATE, seed=3)


async def talk(send_chunk: Any, pcm: bytes) -> float:
    """Send ``pcm`` in 20 ms chunks at real-time pace; returns when its first chunk went."""
    step = 2 * RATE // 50
    start = trio.current_time()
    for i in range(0, len(pcm), step):
        await send_chunk(pcm[i : i + step])
        await trio.sleep_until(start + (i // step + 1) * 0.02)
    return start


def between(events: list[dict[str, Any]], uid: str, first: str, last: str | None) -> bytes:
    """The answer's audio received after the ``first`` event of that type, before ``last``."""
    kinds = [e["eventType"] for e in events]
    start = kinds.index(first)
    end = kinds.index(last) if last is not None else len(kinds)
    return b"".join(
        e["payload"]["audio"]
        for e in events[start:end]
        if e["eventType"] in (ev.OUTPUT_CHUNK, RESPONSE_CHUNK)
        and e["payload"]["utteranceId"] == uid
    )


async def test_a_noise_burst_pauses_the_answer_which_resumes_and_is_heard_whole() -> None:
    async with open_stack(deepgram=DG, openai=OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:

            async def chunk(pcm: bytes) -> None:
                await client.send(ev.INPUT_CHUNK, {"audio": pcm})

            await client.start(RATE, turnMode="auto", silenceMs=400)
            await client.stream_audio(TURN, RATE, realtime=False)
            uid = (await client.expect(ev.OUTPUT_START))["payload"]["utteranceId"]
            with trio.fail_after(20):
                await talk(chunk, silence(0.5, RATE))
                onset = await talk(chunk, BURST)
                pause = await client.expect(ev.OUTPUT_PAUSE)
                await talk(chunk, silence(1.0, RATE))
                resume = await client.expect(ev.OUTPUT_RESUME)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(talk, chunk, silence(8.0, RATE))
                    await client.expect(ev.OUTPUT_COMPLETE)
                    nursery.cancel_scope.cancel()
            assert pause["payload"]["utteranceId"] == resume["payload"]["utteranceId"] == uid
            # The caller's audio stopped within a few frames of the burst's start.
            assert pause["_receivedAt"] - onset < 0.3
            assert 0.7 < resume["_receivedAt"] - pause["_receivedAt"] < 1.5
            events = client.events
            kinds = [e["eventType"] for e in events]
            assert ev.OUTPUT_CANCEL not in kinds
            assert between(events, uid, ev.OUTPUT_PAUSE, ev.OUTPUT_RESUME) == b""
            # What played before the pause and everything after the resumption is the
            # whole answer, as the TTS made it: the part dropped at the pause was sent
            # again, first thing after the resumption.
            played = round(pause["payload"]["playedMs"] * RATE / 1000) * 2
            before = between(events, uid, ev.OUTPUT_START, ev.OUTPUT_PAUSE)
            after = between(events, uid, ev.OUTPUT_RESUME, None)
            assert len(before) > played
            text = [
                e["payload"]["text"]
                for e in events
                if e["eventType"] == ev.RESPONSE_TEXT and e["payload"]["utteranceId"] == uid
            ]
            assert " ".join(text) == STORY
            dropped = before[played:]
            assert after[: len(dropped)] == dropped
            produced = stack.cartesia.audio_seconds[uid]
            assert (played + len(after)) / 2 / RATE == pytest.approx(produced, abs=1e-6)
            # The cough was no turn, and the history holds the whole answer.
            await client.stream_audio(TURN, RATE, realtime=False)
            with trio.fail_after(10):
                await client.expect(ev.RESPONSE_TEXT)  # the LLM has been asked, and answered
            # (what the recogniser makes of the repeat does not matter, nor whether a
            # speculative guess adds a request: the cough must not be among them)
            asked = [r["messages"][-1]["content"] for r in stack.openai.requests]
            assert "uh" not in asked and len(asked) >= 2
            history = stack.openai.requests[-1]["messages"]
            assert history[-2] == {"role": "assistant", "content": STORY}


async def test_a_real_barge_in_pauses_at_once_then_cancels() -> None:
    dg = FakeDeepgramConfig(
        script=("tell me a story", "no stop right there please"),
        final_latency=0.02,
        interim_latency=0.01,
    )
    async with open_stack(deepgram=dg, openai=OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:

            async def chunk(pcm: bytes) -> None:
                await client.send(ev.INPUT_CHUNK, {"audio": pcm})

            await client.start(RATE, turnMode="auto", silenceMs=400)
            await client.stream_audio(TURN, RATE, realtime=False)
            uid = (await client.expect(ev.OUTPUT_START))["payload"]["utteranceId"]
            await talk(chunk, silence(0.5, RATE))
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(talk, chunk, WORDS + silence(1.0, RATE))
                    cancel = await client.expect(ev.OUTPUT_CANCEL)
            assert cancel["payload"]["utteranceId"] == uid
            events = client.events
            kinds = [e["eventType"] for e in events]
            assert kinds.count(ev.OUTPUT_PAUSE) == 1
            assert kinds.index(ev.OUTPUT_PAUSE) < kinds.index(ev.OUTPUT_CANCEL)
            # Between the pause and the cancel: no audio of the answer, no resumption.
            assert ev.OUTPUT_RESUME not in kinds
            assert between(events, uid, ev.OUTPUT_PAUSE, None) == b""


async def test_voicechat_dialect_stops_the_original_client_on_a_pause() -> None:
    async with open_stack(deepgram=DG, openai=OA, cartesia=FAST_CA) as stack:
        async with VoicechatClient.connect(stack.voicechat_url) as client:

            async def chunk(pcm: bytes) -> None:
                await client.send("voicechat.audio.chunk", {"audio": pcm})

            await client.start(RATE, turnMode="auto", silenceMs=400)
            await client.stream_audio(TURN, RATE)
            uid = (await client.expect(RESPONSE_START))["payload"]["utteranceId"]
            with trio.fail_after(20):
                await talk(chunk, silence(0.5, RATE))
                await talk(chunk, BURST)
                stop = await client.expect("voicechat.response.stop")
                assert stop["payload"]["utteranceId"] == uid
                assert stop["payload"]["reason"] == "paused"
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(talk, chunk, silence(8.0, RATE))
                    resume = await client.expect("voicechat.response.resume")
                    await client.expect("voicechat.response.complete")
                    nursery.cancel_scope.cancel()
            assert resume["payload"]["utteranceId"] == uid
            events = client.events
            assert between(events, uid, "voicechat.response.resume", None) != b""
            assert "voicechat.response.interrupt" not in [e["eventType"] for e in events]


async def test_a_phone_call_is_cleared_at_a_cough_and_then_hears_the_whole_answer() -> None:
    """Twilio: the pause is a ``clear`` (the carrier drops what it had queued); the
    resumed answer's media follows, and the marks say the caller heard all of it."""
    dg = FakeDeepgramConfig(
        script=("tell me a story", "uh"), final_latency=0.02, interim_latency=0.01
    )
    async with open_stack(deepgram=dg, openai=OA, cartesia=FAST_CA) as stack:
        async with place_call(stack.url, FakeTwilioConfig()) as call:
            await call.say(speech_like(1.0, 8000, seed=2) + silence(0.6, 8000))
            with trio.fail_after(10):
                await call.wait_until(lambda: call.heard_seconds > 1.0)
            await call.say(speech_like(0.15, 8000, seed=5) + silence(1.5, 8000))
            # At the cough (the answer is still playing, so not at its end). Under heavy
            # load a second pause was seen once (2 clears); the whole answer must still
            # be heard once, below.
            assert call.clears >= 1
            with trio.fail_after(20):
                await call.wait_until(lambda: len(stack.cartesia.completed) >= 1)
                (uid,) = stack.cartesia.completed
                await call.wait_until(lambda: f"{uid}:end" in call.marks_echoed)
            assert stack.cartesia.cancels == []
            # Everything the TTS made was played, once: to within two 40 ms chunks (the
            # resumption starts at the server clock's estimate of the carrier's position,
            # which a loaded machine's carrier can trail by a chunk — docs/turn-taking.md —
            # and marks cleared mid-chunk count none of that chunk).
            heard = call.heard_seconds_for(uid + ":")
            assert abs(heard - stack.cartesia.audio_seconds[uid]) <= 0.08
