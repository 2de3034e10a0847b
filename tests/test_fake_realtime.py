"""The fake Realtime server behaves as the service's documentation and users' reports
say (it is what the S2S engine's end-to-end tests stand on)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
from trio_websocket import HandshakeError, WebSocketConnection, open_websocket_url

from vantum.providers.realtime import codec as rc
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.fake_realtime import (
    Call,
    FakeRealtime,
    FakeRealtimeConfig,
    Say,
    Scripted,
    serve_fake_realtime,
)

RATE = rc.PCM_RATE


@asynccontextmanager
async def client(fake: FakeRealtime, key: str | None = None) -> AsyncIterator[WebSocketConnection]:
    headers = [(b"Authorization", f"Bearer {key or fake.api_key}".encode())]
    async with open_websocket_url(f"{fake.url}?model=gpt-realtime", extra_headers=headers) as ws:
        created = rc.decode_server(await ws.get_message())
        assert isinstance(created, rc.SessionCreated)
        assert created.model == "gpt-realtime"
        yield ws


async def send(ws: WebSocketConnection, event: rc.ClientEvent, eid: str | None = None) -> None:
    await ws.send_message(rc.encode_client(event, eid))


async def until(ws: WebSocketConnection, kind: type, seen: list[rc.ServerEvent]) -> rc.ServerEvent:
    with trio.fail_after(10):
        while True:
            event = rc.decode_server(await ws.get_message())
            seen.append(event)
            if isinstance(event, kind):
                return event


async def stream(ws: WebSocketConnection, pcm: bytes) -> None:
    for i in range(0, len(pcm), 960):
        await send(ws, rc.AudioAppend(pcm[i : i + 960]))


async def test_handshake_needs_the_bearer_key() -> None:
    async with serve_fake_realtime() as fake:
        with pytest.raises(HandshakeError):
            async with client(fake, key="wrong"):
                pass
        assert fake.connections == 0


async def test_manual_turn_response_order_and_the_one_active_response() -> None:
    config = FakeRealtimeConfig(script=(Scripted((Say("one two three"), Say("four"))),))
    async with serve_fake_realtime(config) as fake, client(fake) as ws:
        await send(ws, rc.SessionUpdate(rc.SessionConfig(instructions="hi")))
        seen: list[rc.ServerEvent] = []
        updated = await until(ws, rc.SessionUpdated, seen)
        assert isinstance(updated, rc.SessionUpdated) and updated.session.turn_detection is None
        await send(ws, rc.AudioCommit(), "e1")
        error = await until(ws, rc.ErrorReport, seen)
        assert isinstance(error, rc.ErrorReport)
        assert (error.code, error.event_id) == ("input_audio_buffer_commit_empty", "e1")
        await stream(ws, speech_like(0.5, rate=RATE))
        await send(ws, rc.AudioCommit())
        await send(ws, rc.ResponseCreate())
        await send(ws, rc.ResponseCreate(), "e2")
        seen.clear()
        done = await until(ws, rc.ResponseDone, seen)
        assert isinstance(done, rc.ResponseDone) and done.status == "completed"
        kinds = [type(e).__name__ for e in seen if not isinstance(e, rc.AudioDelta)]
        errors = [e for e in seen if isinstance(e, rc.ErrorReport)]
        assert [e.code for e in errors] == ["conversation_already_has_active_response"]
        assert errors[0].message.startswith("Conversation already has an active response")
        # The transcription of the user's item completes after the response started.
        assert kinds.index("UserTranscriptCompleted") > kinds.index("ResponseCreated")
        first_item = next(e for e in seen if isinstance(e, rc.OutputItemAdded))
        audio = [e for e in seen if isinstance(e, rc.AudioDelta)]
        assert sum(len(a.pcm) for a in audio) == 2 * RATE * 1200 // 1000  # 4 words x 300 ms
        assert [i.transcript for i in done.output] == ["one two three", "four"]
        assert first_item.output_index == 0
        await send(ws, rc.ResponseCancel(), "e3")
        error = await until(ws, rc.ErrorReport, seen)
        assert isinstance(error, rc.ErrorReport) and error.code == "response_cancel_not_active"

        # Truncate/delete semantics, with the real error texts.
        item = done.output[0].item_id
        await send(ws, rc.ItemTruncate(item, 901))
        error = await until(ws, rc.ErrorReport, seen)
        assert isinstance(error, rc.ErrorReport)
        assert error.message == "Audio content of 900ms is already shorter than 901ms"
        await send(ws, rc.ItemTruncate(item, 400))
        truncated = await until(ws, rc.ItemTruncated, seen)
        assert truncated == rc.ItemTruncated(item, 0, 400)
        await send(ws, rc.ItemDelete(done.output[1].item_id))
        await until(ws, rc.ItemDeleted, seen)
        await send(ws, rc.ItemDelete(done.output[1].item_id))
        error = await until(ws, rc.ErrorReport, seen)
        assert isinstance(error, rc.ErrorReport) and "does not exist" in error.message
        assert fake.truncations == [(item, 400)]


async def test_server_vad_turn_and_interrupt_response() -> None:
    config = FakeRealtimeConfig(script=(Scripted((Say("a " * 30),)),), speed=1.0)
    async with serve_fake_realtime(config) as fake, client(fake) as ws:
        vad = rc.ServerVad(silence_duration_ms=300, prefix_padding_ms=100)
        await send(ws, rc.SessionUpdate(rc.SessionConfig(turn_detection=vad)))
        seen: list[rc.ServerEvent] = []
        await stream(ws, silence(0.2, rate=RATE) + speech_like(0.4, rate=RATE))
        started = await until(ws, rc.SpeechStarted, seen)
        assert isinstance(started, rc.SpeechStarted) and started.audio_start_ms == 100
        await stream(ws, silence(0.4, rate=RATE))
        stopped = await until(ws, rc.SpeechStopped, seen)
        assert isinstance(stopped, rc.SpeechStopped) and stopped.item_id == started.item_id
        await until(ws, rc.AudioDelta, seen)
        await stream(ws, speech_like(0.1, rate=RATE))  # the caller speaks over the answer
        done = await until(ws, rc.ResponseDone, seen)
        assert isinstance(done, rc.ResponseDone)
        assert (done.status, done.reason) == ("cancelled", "turn_detected")
        assert done.output[0].status == "incomplete"


async def test_function_call_and_auto_follow_up_race() -> None:
    config = FakeRealtimeConfig(
        script=(Scripted((Call("weather", '{"city": "Paris"}'),)), Scripted((Say("Sunny."),))),
        auto_follow_up=True,
    )
    async with serve_fake_realtime(config) as fake, client(fake) as ws:
        await send(ws, rc.SessionUpdate(rc.SessionConfig()))
        await send(ws, rc.ItemCreate(rc.TextItem("user", "weather in Paris?")))
        await send(ws, rc.ResponseCreate())
        seen: list[rc.ServerEvent] = []
        done = await until(ws, rc.ResponseDone, seen)
        assert isinstance(done, rc.ResponseDone)
        (call,) = done.calls
        assert (call.name, call.arguments) == ("weather", '{"city": "Paris"}')
        await send(ws, rc.ItemCreate(rc.FunctionOutputItem(call.call_id or "", '{"ok": true}')))
        await send(ws, rc.ResponseCreate(), "mine")  # races the server's own follow-up
        error = await until(ws, rc.ErrorReport, seen)
        assert isinstance(error, rc.ErrorReport)
        assert error.code == "conversation_already_has_active_response"
        done = await until(ws, rc.ResponseDone, seen)
        assert isinstance(done, rc.ResponseDone) and done.output[0].transcript == "Sunny."
        assert fake.received["conversation.item.create"] == 2


async def test_session_cap_expires_with_the_real_error_and_1001() -> None:
    async with serve_fake_realtime(FakeRealtimeConfig(session_cap_s=0.3)) as fake:
        async with client(fake) as ws:
            seen: list[rc.ServerEvent] = []
            error = await until(ws, rc.ErrorReport, seen)
            assert isinstance(error, rc.ErrorReport) and error.code == "session_expired"
            assert error.message == "Your session hit the maximum duration of 0.005 minutes."
            with trio.fail_after(5):
                while not ws.closed:
                    try:
                        await ws.get_message()
                    except Exception:
                        break
            assert ws.closed is not None and ws.closed.code == 1001


async def test_bad_events_get_errors_and_the_session_survives() -> None:
    async with serve_fake_realtime() as fake, client(fake) as ws:
        await ws.send_message('{"type": "session.update", "session": {"type": "nope"}}')
        seen: list[rc.ServerEvent] = []
        error = await until(ws, rc.ErrorReport, seen)
        assert isinstance(error, rc.ErrorReport) and error.param == "session.type"
        await send(ws, rc.SessionUpdate(rc.SessionConfig()))
        await until(ws, rc.SessionUpdated, seen)
        assert fake.received["invalid"] == 1
