"""The original TypeScript Vantum's ``voicechat`` dialect on /voicechat/ws, spoken by
a client written from the original's documented protocol, over real sockets."""

from __future__ import annotations

import time
from typing import Any

import attrs
import msgpack
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA

from vantum.protocol.ids import new_id
from vantum.server.auth import issue_token, load_secret, new_secret
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient, ServerRefused
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack
from vantum.testing.voicechat_client import (
    AUDIO_CHUNK,
    AUDIO_END,
    AUDIO_START,
    RESPONSE_CHUNK,
    RESPONSE_COMPLETE,
    RESPONSE_INTERRUPT,
    RESPONSE_START,
    Answer,
    VoicechatClient,
    is_error,
)

RATE = 16_000
BROWSER_ONLY = ("connection.lifecycle.ack", "audio.output.")


def speech(seconds: float = 1.0) -> bytes:
    return speech_like(seconds, RATE) + silence(0.2, RATE)


def assert_uuid7(value: str) -> None:
    assert len(value) == 36 and value[14] == "7", value


async def turn(client: VoicechatClient, sampling_rate: int | None = RATE) -> Answer:
    """What the original frontend does for one press of the record button."""
    await client.start(sampling_rate)
    chunks = await client.stream_audio(speech())
    assert len(chunks) == 5  # 1.2 s in 256 ms chunks
    await client.end()
    return await client.next_answer()


async def test_conversation_in_the_original_protocol() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with VoicechatClient.connect(stack.voicechat_url) as client:
            ack = client.events[0]
            assert ack["eventType"] == "connection.ack" and ack["payload"] == {"success": True}
            assert_uuid7(client.session_id)
            assert_uuid7(ack["eventId"])
            answers = [await turn(client), await turn(client, sampling_rate=None)]
            for answer, said in zip(answers, ["hello there", "what time is it"], strict=True):
                assert answer.ended_by is not None
                assert answer.ended_by["eventType"] == RESPONSE_COMPLETE
                assert answer.sample_rate == RATE
                produced = stack.cartesia.audio_seconds[answer.utterance_id]
                assert answer.audio_seconds == pytest.approx(produced, abs=0.002)
                assert (
                    said in stack.openai.requests[answers.index(answer)]["messages"][-1]["content"]
                )
            assert answers[0].utterance_id != answers[1].utterance_id
            kinds = [e["eventType"] for e in client.events]
            assert not [k for k in kinds if is_error(k) or k.startswith(BROWSER_ONLY)]
            # Each ACK echoes the request's own eventType; chunks get none.
            assert kinds.count(AUDIO_START) == kinds.count(AUDIO_END) == 2
            assert AUDIO_CHUNK not in kinds and "audio.input.start" not in kinds
            # Millisecond timestamps are float64 (msgpackr would make a uint64 a BigInt).
            stamped = [e for e in client.events if "timestamp" in (e.get("payload") or {})]
            assert {e["eventType"] for e in stamped} >= {RESPONSE_START, "transcript.final"}
            for event in stamped:
                stamp = event["payload"]["timestamp"]
                assert isinstance(stamp, float), event
                assert abs(stamp - time.time() * 1000) < 60_000


async def test_frames_of_the_ack_and_errors_echo_the_request() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with VoicechatClient.connect(stack.voicechat_url) as client:
            sid = client.session_id

            async def error_for(event_id: str | None, request_type: str) -> dict[str, Any]:
                error = await client.next_event()
                assert is_error(error["eventType"]), error
                assert error["requestType"] == request_type
                assert error["payload"]["message"]
                if event_id is None:
                    assert_uuid7(error["eventId"])
                else:
                    assert error["eventId"] == event_id
                return error

            sent = await client.send(AUDIO_START, {"samplingRate": 5000})
            error = await error_for(sent, AUDIO_START)
            assert error["eventType"] == "voicechat.audio.error" and error["sessionId"] == sid
            assert error["payload"]["code"] == "audio.error.invalid_sampling_rate"
            assert "5000" in error["payload"]["message"]

            sent = await client.send(AUDIO_CHUNK, {"audio": b"\x00" * 3})
            error = await error_for(sent, AUDIO_CHUNK)
            assert error["eventType"] == "voicechat.audio.error"

            sent = await client.send("voicechat.video.start", {})
            error = await error_for(sent, "voicechat.video.start")
            assert error["eventType"] == "voicechat.video.error"

            stale = new_id()
            frame = {"eventType": AUDIO_START, "eventId": "req-1", "sessionId": stale}
            await client.send_raw(msgpack.packb({**frame, "payload": [1]}))
            error = await error_for("req-1", AUDIO_START)
            assert (error["eventType"], error["sessionId"]) == ("voicechat.audio.error", stale)

            await client.send_raw(b"\xc1 not msgpack")
            error = await error_for(None, "unknown")
            assert (error["eventType"], error["sessionId"]) == ("voicechat.error", sid)

            # ACKs echo the eventType the client used, whichever dialect's name it is.
            sent = await client.send("audio.input.start", {"samplingRate": RATE})
            ack = await client.next_event()
            assert (ack["eventType"], ack["eventId"]) == ("audio.input.start", sent)
            sent = await client.send(AUDIO_START, {"samplingRate": RATE}, event_id="my-own-id")
            ack = await client.next_event()
            assert (ack["eventType"], ack["eventId"], ack["sessionId"]) == (AUDIO_START, sent, sid)
            assert ack["payload"] == {"success": True}


async def test_chunks_before_start_and_a_stale_session_id_are_accepted() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with VoicechatClient.connect(stack.voicechat_url) as client:
            await client.stream_audio(speech())  # no voicechat.audio.start: 16 kHz
            await client.end()
            first = await client.next_answer()
            assert first.sample_rate == RATE and first.audio_seconds > 0.5
            # The frontend keeps the id of a previous connection while recording.
            client.session_id = stale = new_id()
            answer = await turn(client, sampling_rate=None)
            acks = [e for e in client.events if e["eventType"] in (AUDIO_START, AUDIO_END)]
            assert [a["sessionId"] for a in acks[-2:]] == [stale, stale]  # echoed
            assert answer.ended_by is not None and answer.audio_seconds > 0.5
            kinds = [e["eventType"] for e in client.events]
            assert not [k for k in kinds if is_error(k)]
            assert kinds.count(AUDIO_START) == 1  # no ACK for a start the client never sent
            assert stack.deepgram.query_params[0]["sample_rate"] == str(RATE)


STORY = " ".join(f"Sentence number {i} of a rather long story." for i in range(12))
LONG_OA = FakeOpenAIConfig(
    first_token_latency=0.01, tokens_per_second=2000, responder=lambda messages: STORY
)


async def test_barge_in_sends_response_interrupt() -> None:
    async with open_stack(deepgram=FAST_DG, openai=LONG_OA, cartesia=FAST_CA) as stack:
        async with VoicechatClient.connect(stack.voicechat_url) as client:
            await client.start()
            await client.stream_audio(speech())
            await client.end()
            answer = await client.answer_started()
            await client.expect(RESPONSE_CHUNK)
            # The user presses record again while the answer plays.
            await client.send(AUDIO_START, {"samplingRate": RATE})
            with trio.fail_after(10):
                answer = await client.play(answer)
            assert answer.ended_by is not None
            assert answer.ended_by["eventType"] == RESPONSE_INTERRUPT
            stamp = answer.ended_by["payload"]["timestamp"]
            assert isinstance(stamp, float) and abs(stamp - time.time() * 1000) < 60_000
            after = client.events[client.events.index(answer.ended_by) + 1 :]
            assert not [
                e
                for e in after
                if e["eventType"] == RESPONSE_CHUNK
                and e["payload"]["utteranceId"] == answer.utterance_id
            ]
            assert answer.audio_seconds < stack.cartesia.audio_seconds[answer.utterance_id]


async def test_no_unprompted_speech_on_voicechat() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        turn_policy = attrs.evolve(stack.app.settings.turn, idle_prompt_s=0.2)
        stack.app.settings = attrs.evolve(stack.app.settings, turn=turn_policy)
        async with (
            VoicechatClient.connect(stack.voicechat_url) as quiet,
            BrowserClient.connect(stack.ws_url) as control,
        ):
            with trio.fail_after(20):
                # /ws prompts twice and hangs up; the voicechat caller, idle for longer,
                # heard nothing and is still connected.
                await control.expect("connection.lifecycle.hangup")
            assert [e["eventType"] for e in quiet.events] == ["connection.ack"]
            assert quiet.close_code is None
            await turn(quiet)  # and still converses


async def test_refusals_say_why_in_the_dialect_and_a_query_token_admits() -> None:
    secret = new_secret()
    month = 30 * 86400
    async with open_stack(
        deepgram=FAST_DG,
        openai=FAST_OA,
        cartesia=FAST_CA,
        auth_secret=secret,
        token_max_ttl_s=month,  # the server allows month-long tokens for this frontend
    ) as stack:
        with pytest.raises(ServerRefused) as refused:
            async with VoicechatClient.connect(stack.voicechat_url):
                pass
        event = refused.value.event
        assert (event["eventType"], event["requestType"]) == ("voicechat.error", "connect")
        assert event["payload"]["code"] == "connection.error.auth"
        assert event["payload"]["reason"] == "missing" and event["payload"]["message"]
        assert refused.value.close_code == 1008
        # A 30-day token in the URL, as VITE_WS_URL carries it.
        token = issue_token(
            load_secret(secret),
            subject="frontend",
            audience="ws",
            ttl_s=month,
            now=time.time(),
            max_ttl_s=month,
        )
        async with VoicechatClient.connect(f"{stack.voicechat_url}?token={token}") as client:
            assert_uuid7(client.session_id)


async def test_capacity_refusal_in_the_dialect() -> None:
    async with open_stack(
        deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, max_sessions=1
    ) as stack:
        async with VoicechatClient.connect(stack.voicechat_url):
            with pytest.raises(ServerRefused) as refused:
                async with VoicechatClient.connect(stack.voicechat_url):
                    pass
        event = refused.value.event
        assert (event["eventType"], event["requestType"]) == ("voicechat.error", "connect")
        assert event["payload"]["code"] == "connection.error.capacity"
        assert refused.value.close_code == 1013
