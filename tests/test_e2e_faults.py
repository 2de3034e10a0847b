"""Provider faults injected in the fakes: the call goes on and the caller is told."""

from __future__ import annotations

import attrs
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, check_answer_events, speak_turn

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.stack import open_stack

RATE = 16_000


async def test_deepgram_drop_mid_turn_keeps_transcript_complete() -> None:
    dg = FakeDeepgramConfig(
        script=("one two three four five six seven eight",),
        final_latency=0.02,
        interim_latency=0.01,
        word_interval=0.2,
    )
    async with open_stack(deepgram=dg, openai=FAST_OA, cartesia=FAST_CA) as stack:
        stack.deepgram.drop_after(0.8)
        async with BrowserClient.connect(stack.ws_url) as client:
            turn = await speak_turn(client, RATE, seconds=2.0)
            assert turn.errors == []
            assert " ".join(turn.finals) == "one two three four five six seven eight"
            check_answer_events(turn)
        assert stack.deepgram.connections >= 2  # it really dropped and reconnected


async def test_openai_429_then_success_is_spoken_without_error() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        stack.openai.fail_next(429, retry_after=0.05)
        async with BrowserClient.connect(stack.ws_url) as client:
            turn = await speak_turn(client, RATE)
            assert turn.errors == []
            assert "You said" in " ".join(turn.text)
            assert turn.audio_seconds > 0.3
        assert not stack.openai._failures  # the 429 was served (and retried past)
        assert stack.openai.completed == 1  # exactly one successful completion


async def test_openai_401_speaks_fallback_and_reports_auth_error() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        stack.openai.fail_next(401)
        async with BrowserClient.connect(stack.ws_url) as client:
            turn = await speak_turn(client, RATE)
            assert [e["eventType"] for e in turn.errors] == [ev.llm_error("auth")]
            assert turn.errors[0]["requestType"] == "turn"
            assert turn.text and "You said" not in " ".join(turn.text)
            assert turn.audio_seconds > 0.3  # the fallback was spoken
            check_answer_events(turn)


async def test_cartesia_error_reports_and_next_turn_works() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        stack.cartesia.fail_next_context("voice model exploded")
        async with BrowserClient.connect(stack.ws_url) as client:
            bad = await speak_turn(client, RATE)
            assert [e["eventType"] for e in bad.errors] == [ev.ERR_TTS]
            assert "voice model exploded" in bad.errors[0]["payload"]["message"]
            assert bad.text  # the answer's text still reached the client
            good = await speak_turn(client, RATE)
            assert good.errors == []
            assert good.audio_seconds > 0.3
            check_answer_events(good)


async def test_turn_the_recogniser_never_finished_is_reported_not_dropped() -> None:
    """A Finalize the provider never answers (twice: once more after the reconnect)
    closes the turn empty; the caller is told, instead of waiting forever for an
    answer (the 30-minute soak caught this as a stalled turn under load)."""
    dg = attrs.evolve(FAST_DG, ignore_finalize=True, word_interval=10.0)
    async with open_stack(
        deepgram=dg,
        openai=FAST_OA,
        cartesia=FAST_CA,
        stt_options={"finalize_timeout": 0.3, "reconnect_backoff": 0.01},
    ) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.start(RATE)
            await client.stream_audio(speech_like(0.4, RATE), RATE, realtime=False)
            await client.end_turn()
            with trio.fail_after(10):
                while True:
                    event = await client.next_event()
                    assert event["eventType"] not in (ev.RESPONSE_START, ev.TRANSCRIPT_FINAL)
                    if ev.is_error(event["eventType"]):
                        break
            assert event["eventType"] == ev.ERR_STT
            assert event["requestType"] == ev.INPUT_END
            assert "say it again" in event["payload"]["message"]
            # The session goes on: a typed turn is answered.
            await client.send(ev.TEXT_INPUT, {"text": "are you there"})
            with trio.fail_after(10):
                turn = await client.collect_turn()
            assert turn.audio_seconds > 0.3
        assert stack.deepgram.messages["Finalize"] >= 2  # asked, reconnected, asked again
