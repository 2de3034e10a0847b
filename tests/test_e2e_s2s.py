"""Speech-to-speech mode end to end: a real server (VANTUM_ENGINE=s2s) and the fake
OpenAI Realtime server on 127.0.0.1, talked to through /ws like any browser call."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from vantum.agent_spec import AgentSpec, HttpTool
from vantum.agents.loader import AgentBook
from vantum.asgi import read_body, serve_app, serve_lifespan
from vantum.protocol import events as ev
from vantum.providers.realtime import codec as rc
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient, TurnResult
from vantum.testing.fake_realtime import Call, FakeRealtimeConfig, Say, Scripted
from vantum.testing.stack import open_stack

pytestmark = pytest.mark.slow

RATE = 16_000
SHORT = FakeRealtimeConfig(
    script=(Scripted((Say("Hi, how can I help?", ms_per_word=150),)),),
    user_transcripts=("hello there",),
)


async def manual_turn(client: BrowserClient, seconds: float = 0.5) -> TurnResult:
    await client.start(RATE)
    result: list[TurnResult] = []
    async with trio.open_nursery() as nursery:

        async def collect() -> None:
            result.append(await client.collect_turn())

        nursery.start_soon(collect)
        await client.stream_audio(speech_like(seconds, RATE), RATE, realtime=False)
        await client.end_turn()
    return result[0]


def kinds(turn: TurnResult) -> list[str]:
    return [e["eventType"] for e in turn.events]


async def test_a_spoken_manual_turn_is_answered_in_the_models_voice() -> None:
    async with open_stack(realtime=SHORT) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            turn = await manual_turn(client)
    assert turn.errors == []
    # All the audio the model produced was played, at the caller's rate.
    assert turn.sample_rate == RATE
    assert turn.audio_seconds == pytest.approx(5 * 0.150, abs=0.003)
    assert turn.text == ["Hi, how can I help?"]
    assert turn.finals == ["hello there"]  # the transcript may come after the answer starts
    k = kinds(turn)
    assert k.index(ev.RESPONSE_START) < k.index(ev.OUTPUT_START) < k.index(ev.OUTPUT_COMPLETE)
    assert k.index(ev.OUTPUT_COMPLETE) < k.index(ev.RESPONSE_TEXT) < k.index(ev.RESPONSE_COMPLETE)
    assert turn.metrics["voiceToVoiceMs"] is not None
    assert turn.metrics["endOfSpeechToFinalMs"] is None  # no cascade stages in S2S mode
    # Manual turns: no server VAD; one commit and one response.create per turn.
    assert fake.sessions[-1].turn_detection is None
    assert (fake.received["input_audio_buffer.commit"], fake.received["response.create"]) == (1, 1)
    assert fake.received["response.cancel"] == 0
    assert fake.models == ["gpt-realtime"]


async def test_barge_in_truncates_the_item_to_what_was_heard() -> None:
    long = FakeRealtimeConfig(
        script=(Scripted((Say("one two three four five six seven eight nine ten"),)),),
        user_transcripts=("tell me a story", "stop"),
    )
    async with open_stack(realtime=long) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.start(RATE, turnMode="auto", silenceMs=300)
            events: list[dict[str, Any]] = []
            audio_started = trio.Event()

            async def read() -> None:
                while True:
                    event = await client.next_event()
                    events.append(event)
                    if event["eventType"] == ev.OUTPUT_START:
                        audio_started.set()
                    if event["eventType"] == ev.METRICS_TURN:
                        return

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await client.stream_audio(speech_like(0.5, RATE) + silence(0.5, RATE), RATE)
                with trio.fail_after(10):
                    await audio_started.wait()
                # Keep the microphone open (silence) for a second of the answer, then talk.
                await client.stream_audio(silence(1.0, RATE), RATE)
                await client.stream_audio(speech_like(0.3, RATE), RATE)
            await fake.wait_for(lambda: bool(fake.truncations))
    started = next(e for e in events if e["eventType"] == ev.OUTPUT_START)["_receivedAt"]
    cancel = next(e for e in events if e["eventType"] == ev.OUTPUT_CANCEL)
    heard_ms = (cancel["_receivedAt"] - started) * 1000
    ((_, cut_ms),) = fake.truncations
    # Exact to what the caller's clock says was played, within one 40 ms output frame.
    assert abs(cut_ms - heard_ms) <= 40, (cut_ms, heard_ms)
    assert 900 <= cut_ms < 3000 - 1  # about a second in, never past the audio produced
    # The provider's own VAD cancelled its response: Vantum sent no response.cancel.
    assert fake.received["response.cancel"] == 0
    # What the client and the history get is what was heard, not the whole answer.
    texts = [e["payload"]["text"] for e in events if e["eventType"] == ev.RESPONSE_TEXT]
    assert len(texts) == 1 and "one" in texts[0].split() and "ten" not in texts[0].split()
    assert fake.errors == []


async def test_a_tool_round_trip_sends_results_after_the_calling_response() -> None:
    calls: list[dict[str, Any]] = []

    async def tool_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        calls.append(json.loads((await read_body(receive)) or b"{}"))
        body = json.dumps({"weather": "sunny"}).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})

    config = FakeRealtimeConfig(
        script=(
            Scripted((Say("Let me check.", ms_per_word=100), Call("weather", '{"city": "Oslo"}'))),
            Scripted((Say("It is sunny in Oslo.", ms_per_word=100),)),
        ),
        auto_follow_up=True,  # the server also answers the result itself: a benign race
    )
    async with (
        serve_app(tool_app) as tool_url,
        open_stack(realtime=config, tool_secret="s2s-tool-secret") as stack,
    ):
        fake = stack.realtime
        assert fake is not None
        spec = AgentSpec(
            "weather",
            "You tell the weather.",
            tools=(HttpTool("weather", "The weather in a city", tool_url + "/weather"),),
        )
        stack.app.agents = AgentBook({spec.name: spec}, spec.name)
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.send(ev.TEXT_INPUT, {"text": "weather in Oslo?"})
            first = await client.collect_turn()
            second = await client.collect_turn()
    assert [(c["tool"], c["arguments"]) for c in calls] == [("weather", {"city": "Oslo"})]
    assert ev.TOOL_CALL in kinds(first) and ev.TOOL_RESULT in kinds(first)
    result = next(e for e in first.events if e["eventType"] == ev.TOOL_RESULT)
    assert result["payload"]["ok"] is True
    assert second.text == ["It is sunny in Oslo."]
    # The tool was offered to the model, its output went back as a function_call_output
    # item, and the server's own follow-up made our response.create benign.
    assert [t.name for t in fake.sessions[0].tools] == ["weather"]
    outputs = [i for _, i in fake.conversation_log if isinstance(i, rc.FunctionOutputItem)]
    assert len(outputs) == 1 and "sunny" in outputs[0].output
    assert fake.errors == ["conversation_already_has_active_response"]
    assert first.errors == [] and second.errors == []


async def test_the_session_is_recycled_before_its_cap_with_the_history_replayed() -> None:
    config = FakeRealtimeConfig(
        script=(
            Scripted((Say("First answer.", ms_per_word=100),)),
            Scripted((Say("Second answer.", ms_per_word=100),)),
        ),
        user_transcripts=("first question", "second question"),
        session_cap_s=3.0,
    )
    async with open_stack(realtime=config, s2s_options={"recycle_after_s": 1.0}) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            first = await manual_turn(client)
            await fake.wait_for(lambda: fake.connections == 2)
            second = await manual_turn(client)
    assert first.errors == [] and second.errors == []
    assert first.text == ["First answer."] and second.text == ["Second answer."]
    # The replacement session got the same instructions and the heard history.
    assert fake.sessions[-1].instructions == fake.sessions[0].instructions
    replayed = [i for n, i in fake.conversation_log if n == 2]
    assert replayed == [
        rc.TextItem("user", "first question"),
        rc.TextItem("assistant", "First answer."),
    ]
    assert "session_expired" not in fake.errors


async def test_a_dropped_connection_is_reported_and_the_next_turn_works() -> None:
    config = FakeRealtimeConfig(
        script=(Scripted((Say("Hello again friend.", ms_per_word=100),)),),
    )
    async with open_stack(realtime=config) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            fake.drop_in_next_response()
            dropped = await manual_turn(client)
            await fake.wait_for(lambda: fake.connections == 2)  # replaced, history replayed
            fake.malform_next(1)  # the next server frame is not JSON: skipped, call goes on
            after = await manual_turn(client)
    assert [e["eventType"] for e in dropped.errors] == [ev.ERR_S2S]
    assert fake.connections == 2
    assert after.errors == [] and after.text == ["Hello again friend."]
    assert fake.sent["malformed"] == 1


async def test_a_refused_provider_handshake_is_an_error_event() -> None:
    async with open_stack(realtime=SHORT) as stack:
        fake = stack.realtime
        assert fake is not None
        fake.reject_next(401)
        async with BrowserClient.connect(stack.ws_url) as client:
            error = await client.expect_error()
    assert error["eventType"] == ev.ERR_S2S
    assert fake.connections == 0


async def test_a_provider_gone_for_good_is_reported_and_the_caller_is_not_blocked() -> None:
    async with open_stack(realtime=SHORT) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            await fake.wait_for(lambda: fake.connections == 1)
            fake.reject_next(401, times=3)  # every reconnect is refused
            fake.drop_in_next_response()
            await client.start(RATE)
            await client.stream_audio(speech_like(0.5, RATE), RATE, realtime=False)
            await client.end_turn()
            errors = [await client.expect_error(), await client.expect_error()]
            # Four seconds of audio more than every buffer on the way holds: dropped, and
            # the caller's frames are still read and acknowledged.
            await client.stream_audio(speech_like(4.0, RATE), RATE, realtime=False)
            with trio.fail_after(5):
                await client.end_turn()
                await client.expect(ev.INPUT_END)
    assert [e["eventType"] for e in errors] == [ev.ERR_S2S, ev.ERR_S2S]
    assert "could not be reached" in errors[1]["payload"]["message"]


async def test_a_session_that_hits_the_cap_is_replaced_without_an_error() -> None:
    """Recycling too late (or a shorter cap than configured): the provider's
    ``session_expired`` and close 1001 lead to a replacement, not to a client error."""
    config = FakeRealtimeConfig(
        script=(Scripted((Say("Still here.", ms_per_word=100),)),),
        user_transcripts=("are you there",),
        session_cap_s=2.0,
    )
    async with open_stack(realtime=config) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            first = await manual_turn(client)
            await fake.wait_for(lambda: fake.connections == 2)
            second = await manual_turn(client)
    assert fake.errors.count("session_expired") >= 1
    assert first.errors == [] and second.errors == []
    assert second.text == ["Still here."]
    replayed = [i for n, i in fake.conversation_log if n == 2]
    assert replayed[:2] == [
        rc.TextItem("user", "are you there"),
        rc.TextItem("assistant", "Still here."),
    ]


async def test_a_stalled_response_is_waited_for_and_measured() -> None:
    async with open_stack(realtime=SHORT) as stack:
        fake = stack.realtime
        assert fake is not None
        async with BrowserClient.connect(stack.ws_url) as client:
            fake.stall_next_response(1.0)
            stalled = await manual_turn(client)
            normal = await manual_turn(client)
    assert stalled.errors == [] and stalled.text == ["Hi, how can I help?"]
    assert stalled.metrics["voiceToVoiceMs"] >= 1000
    assert normal.metrics["voiceToVoiceMs"] < stalled.metrics["voiceToVoiceMs"]
