"""Auto turn-taking and barge-in over /ws against the socket-level fakes."""

from __future__ import annotations

import trio
from e2e_helpers import FAST_CA, FAST_OA

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack

RATE = 16_000
DG = FakeDeepgramConfig(
    script=("tell me a long story", "no stop right there please"),
    final_latency=0.02,
    interim_latency=0.01,
)
STORY = " ".join(f"Sentence number {i} of a rather long story." for i in range(12))
LONG_OA = FakeOpenAIConfig(
    first_token_latency=0.01, tokens_per_second=2000, responder=lambda messages: STORY
)


async def test_auto_mode_turn_ends_on_silence_without_input_end() -> None:
    async with open_stack(deepgram=DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.start(RATE, turnMode="auto", silenceMs=400)
            await client.stream_audio(
                speech_like(1.0, RATE, seed=1) + silence(1.0, RATE), RATE, realtime=False
            )
            turn = await client.collect_turn()
            assert turn.errors == []
            assert turn.finals == ["tell me a long story"]
            assert turn.audio_seconds > 0.3


async def test_barge_in_over_ws_cancels_and_keeps_heard_part() -> None:
    async with open_stack(deepgram=DG, openai=LONG_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.start(RATE, turnMode="auto", silenceMs=400)
            await client.stream_audio(
                speech_like(1.0, RATE, seed=2) + silence(0.6, RATE), RATE, realtime=False
            )
            start = await client.expect(ev.OUTPUT_START)
            uid = start["payload"]["utteranceId"]
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    # Let ~1 s of the answer play, then talk over it in real time.
                    nursery.start_soon(
                        client.stream_audio,
                        silence(1.0, RATE) + speech_like(1.5, RATE, seed=3) + silence(1.0, RATE),
                        RATE,
                    )
                    cancel = await client.expect(ev.OUTPUT_CANCEL)
            assert cancel["payload"]["utteranceId"] == uid
            after = client.events[client.events.index(cancel) + 1 :]
            assert not [
                e
                for e in after
                if e["eventType"] == ev.OUTPUT_CHUNK and e["payload"]["utteranceId"] == uid
            ]
            # The interruption is answered next; the LLM saw only what was heard.
            await client.expect(ev.RESPONSE_START)
            history = stack.openai.requests[-1]["messages"]
            assert history[-1] == {"role": "user", "content": "no stop right there please"}
            heard = history[-2]["content"]
            assert history[-2]["role"] == "assistant"
            assert 0 < len(heard) < len(STORY) and STORY.startswith(heard.rstrip("."))
            # The audio sent ahead of playback (at most the lead, 0.2 s) was cut unheard.
            cut = stack.app.metrics.registry.get_sample_value(
                "vantum_audio_dropped_seconds_total", {"direction": "out", "reason": "barge_in"}
            )
            assert cut is not None and 0 < cut <= 0.2 + 0.04
