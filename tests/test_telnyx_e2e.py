"""Telnyx calls end to end: the fake Telnyx (signed webhooks, Call Control REST, media
stream caller) against a real server, over real sockets; mirrors test_twilio_e2e."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
from e2e_helpers import FAST_CA
from trio_websocket import ConnectionClosed, open_websocket_url

from vantum.protocol import events as ev
from vantum.protocol.telnyx import (
    MediaFormat,
    TelnyxMedia,
    TelnyxStart,
    decode_client_state,
    encode_inbound,
)
from vantum.protocol.twilio import TICKET_PARAMETER
from vantum.testing.audio_fixtures import rms_dbfs, silence, speech_like
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.fake_telnyx import (
    FakeTelnyxCall,
    FakeTelnyxConfig,
    FakeTelnyxRest,
    call_initiated,
    dial_fake_telnyx,
    new_signing_key,
    place_telnyx_call,
    public_key_b64,
    send_webhook,
    serve_fake_telnyx_rest,
)
from vantum.testing.stack import Stack, open_stack
from vantum.transports.telnyx_rest import TelnyxAPIError, TelnyxREST

KEY = new_signing_key()
DG = FakeDeepgramConfig(
    script=("hello there", "what time is it"), final_latency=0.02, interim_latency=0.01
)


def heard_reply(messages: list[dict[str, Any]]) -> str:
    content = str(messages[-1]["content"])
    return "You pressed a key." if "keypad" in content else f"Heard {content}."


OA = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000, responder=heard_reply)


def utterance(pcm_seconds: float = 1.0) -> bytes:
    return speech_like(pcm_seconds, 8000) + silence(0.6, 8000)


@asynccontextmanager
async def telnyx_stack(**kw: Any) -> AsyncIterator[tuple[Stack, FakeTelnyxRest]]:
    async with serve_fake_telnyx_rest() as rest:
        kw.setdefault("deepgram", DG)
        kw.setdefault("openai", OA)
        async with open_stack(
            cartesia=FAST_CA,
            telnyx_api_key=rest.api_key,
            telnyx_api_base=rest.base_url,
            telnyx_public_key=public_key_b64(KEY),
            **kw,
        ) as stack:
            yield stack, rest


async def answered(stack: Stack, call: FakeTelnyxCall, n: int) -> str:
    def done() -> bool:
        if len(stack.cartesia.completed) < n:
            return False
        return f"{stack.cartesia.completed[n - 1]}:end" in call.marks_echoed

    with trio.fail_after(10):
        await call.wait_until(done)
    return stack.cartesia.completed[n - 1]


async def wait_idle(stack: Stack) -> None:
    with trio.fail_after(3):
        await stack.app.wait_idle()
    assert stack.app.sessions == {}


def refused(stack: Stack, reason: str) -> float:
    value = stack.app.metrics.sessions_refused.labels(reason)._value.get()
    return float(value)


async def test_telnyx_conversation_through_webhook_answer_and_stream() -> None:
    async with telnyx_stack() as (stack, rest):
        cfg = FakeTelnyxConfig(signing_key=KEY)
        async with place_telnyx_call(stack.url, rest, cfg) as call:
            # The webhook answered through Call Control, streaming both ways to us.
            (answer,) = rest.done("answer")
            assert answer.call_control_id == cfg.call_control_id
            assert answer.body["stream_url"] == stack.url.replace("http", "ws") + "/telnyx/stream"
            assert answer.body["stream_bidirectional_mode"] == "rtp"
            assert answer.body["stream_bidirectional_codec"] == "PCMU"
            state = decode_client_state(answer.body["client_state"])
            assert state[TICKET_PARAMETER].startswith("t1.")
            produced = 0.0
            for n, expected in enumerate(["hello there", "what time is it"], 1):
                await call.say(utterance())
                uid = await answered(stack, call, n)
                assert stack.openai.requests[n - 1]["messages"][-1]["content"] == expected
                seconds = stack.cartesia.audio_seconds[uid]
                assert seconds - 0.002 <= call.heard_seconds_for(uid + ":") <= seconds + 0.021
                produced += seconds
            assert set(call.frame_sizes) == {160}  # 20 ms PCMU frames
            assert call.marks_echoed == call.marks_received and call.marks_cleared == []
            assert call.heard_seconds == pytest.approx(produced, abs=0.05)
            assert rms_dbfs(bytes(call.heard)) > -30
            assert call.bad_messages == []
            await call.hang_up()  # Telnyx's ``stop``
            with trio.fail_after(3):
                await call.wait_until(lambda: call.closed)
            assert call.close_code == ev.CLOSE_NORMAL
        await wait_idle(stack)


async def test_barge_in_on_a_telnyx_call_sends_clear_and_the_history_holds_the_heard_part() -> None:
    story = " ".join(f"Part {i} of a long answer." for i in range(15))
    dg = FakeDeepgramConfig(
        script=("tell me a story", "no wait stop"), final_latency=0.02, interim_latency=0.01
    )
    long_oa = attrs.evolve(OA, responder=lambda _messages: story)
    async with telnyx_stack(deepgram=dg, openai=long_oa) as (stack, rest):
        async with place_telnyx_call(stack.url, rest, FakeTelnyxConfig(signing_key=KEY)) as call:
            await call.say(utterance())
            with trio.fail_after(10):
                await call.wait_until(lambda: call.heard_seconds > 1.0)
            await call.say(speech_like(1.5, 8000) + silence(0.6, 8000))
            with trio.fail_after(10):
                await call.wait_until(lambda: call.clears >= 1)
            (uid,) = stack.cartesia.cancels[:1]
            heard = call.heard_seconds_for(uid + ":")
            assert 0.5 < heard < stack.cartesia.audio_seconds.get(uid, 99)
            assert call.marks_cleared  # Telnyx returns the queued marks after clear
            with trio.fail_after(10):
                await call.wait_until(lambda: len(stack.openai.requests) >= 2)
            history = stack.openai.requests[-1]["messages"]
            assert history[-1]["content"] == "no wait stop"
            assert 0 < len(history[-2]["content"]) < len(story)
        await wait_idle(stack)


async def test_dtmf_reaches_the_conversation_and_an_unasked_codec_is_refused() -> None:
    async with telnyx_stack() as (stack, rest):
        cfg = FakeTelnyxConfig(signing_key=KEY, speed=4.0)
        async with place_telnyx_call(stack.url, rest, cfg) as call:
            await call.press("5")
            await answered(stack, call, 1)
            message = stack.openai.requests[0]["messages"][-1]["content"]
            assert message == "(The caller pressed 5 on the keypad.)"
        await wait_idle(stack)
        # The answer asked for PCMU; a stream starting in A-law is ended before any session.
        pcma = FakeTelnyxConfig(signing_key=KEY, media_format=MediaFormat("PCMA", 8000))
        async with place_telnyx_call(stack.url, rest, pcma) as call:
            with trio.fail_after(3):
                await call.wait_until(lambda: call.closed)
            assert call.close_code == ev.CLOSE_POLICY
        assert refused(stack, "telnyx_bad_start") == 1
        assert len(stack.openai.requests) == 1


async def test_unsigned_forged_stale_and_garbage_webhooks_are_refused() -> None:
    async with telnyx_stack() as (stack, rest):
        url = stack.url + "/telnyx/webhook"
        cfg = FakeTelnyxConfig()
        rest.add_call(cfg.call_control_id)
        event = call_initiated(cfg)
        assert (await send_webhook(url, event, None)).status_code == 403
        assert (await send_webhook(url, event, KEY, forge=True)).status_code == 403
        stale = int(time.time()) - 301
        assert (await send_webhook(url, event, KEY, timestamp=stale)).status_code == 403
        tampered = await send_webhook(url, event, KEY, body=b'{"data": {"event_type": 1}}')
        assert tampered.status_code == 400  # signed, but not a Telnyx event
        assert rest.actions == []  # nothing was answered
        assert refused(stack, "telnyx_webhook_missing") == 1
        assert refused(stack, "telnyx_webhook_bad_signature") == 1
        assert refused(stack, "telnyx_webhook_stale") == 1
        # ...and the server still answers a genuine call.
        assert (await send_webhook(url, event, KEY)).status_code == 200
        assert rest.answer_for(cfg.call_control_id) is not None
        assert stack.app.sessions == {}


async def test_streams_without_a_fresh_ticket_are_refused_and_bad_frames_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    async with telnyx_stack() as (stack, rest):
        stream_url = stack.url.replace("http", "ws") + "/telnyx/stream"
        # No client_state at all: a stream this server never answered.
        async with dial_fake_telnyx(stream_url, FakeTelnyxConfig()) as call:
            with trio.fail_after(3):
                await call.wait_until(lambda: call.closed)
            assert call.close_code == ev.CLOSE_POLICY
        assert refused(stack, "stream_ticket_missing") == 1
        # A genuine call, then a replay of its start on a second socket.
        cfg = FakeTelnyxConfig(signing_key=KEY, speed=4.0)
        async with place_telnyx_call(stack.url, rest, cfg) as call:
            state = rest.done("answer")[0].body["client_state"]
            start = TelnyxStart(1, "other-stream", cfg.call_control_id, client_state=state)
            async with open_websocket_url(stream_url) as replay:
                await replay.send_message(encode_inbound(start))
                with pytest.raises(ConnectionClosed) as info, trio.fail_after(3):
                    await replay.get_message()
                assert info.value.reason is not None
                assert info.value.reason.code == ev.CLOSE_POLICY
            # Malformed frames on the live call are skipped; the call goes on.
            await call.send_raw("{not json")
            await call.send_raw('{"event": "media", "stream_id": "nope", "media": {}}')
            await call.send_telnyx(lambda seq: TelnyxMedia(seq, "wrong", b"\xff" * 160, 1, 0))
            await call.send_raw('{"event": "error", "payload": {"code": 100003, "title": "x"}}')
            await call.say(utterance())
            await answered(stack, call, 1)
            assert stack.openai.requests[0]["messages"][-1]["content"] == "hello there"
        assert refused(stack, "stream_ticket_reused") == 1
        await wait_idle(stack)
    warnings = [r.getMessage() for r in caplog.records if r.name == "vantum.twilio"]
    for needle in ("not valid JSON", "'payload'", "expected", "100003"):
        assert any(needle in w and cfg.call_control_id in w for w in warnings), (needle, warnings)


async def test_rest_hang_up_and_transfer_end_the_stream_and_errors_are_reported() -> None:
    async with telnyx_stack() as (stack, rest):
        client = TelnyxREST(rest.api_key, rest.base_url)
        for action in ("hang_up", "transfer"):
            cfg = FakeTelnyxConfig(signing_key=KEY, speed=4.0)
            async with place_telnyx_call(stack.url, rest, cfg) as call:
                with trio.fail_after(3):
                    await stack.app.wait_open()
                if action == "hang_up":
                    await client.hang_up(cfg.call_control_id)
                else:
                    await client.transfer(cfg.call_control_id, "+14155550100")
                with trio.fail_after(3):
                    await call.wait_until(lambda: call.closed)
                with pytest.raises(TelnyxAPIError) as info:
                    await client.hang_up(cfg.call_control_id)
                assert (info.value.status, info.value.code) == (422, "90018")
            await wait_idle(stack)
        assert rest.done("transfer")[0].body == {"to": "+14155550100"}
        with pytest.raises(TelnyxAPIError) as info:
            await TelnyxREST("wrong-key", rest.base_url).hang_up("v3:x")
        assert info.value.status == 401


async def test_a_full_server_rejects_telnyx_calls_busy() -> None:
    async with telnyx_stack(max_sessions=0) as (stack, rest):
        cfg = FakeTelnyxConfig(signing_key=KEY)
        rest.add_call(cfg.call_control_id)
        response = await send_webhook(stack.url + "/telnyx/webhook", call_initiated(cfg), KEY)
        assert response.status_code == 200
        (reject,) = rest.done("reject")
        assert reject.body == {"cause": "USER_BUSY"} and rest.done("answer") == []
