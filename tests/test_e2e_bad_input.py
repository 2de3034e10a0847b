"""Bad input gets a clear error event; the session survives; other sessions never notice."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, check_answer_events, speak_turn
from trio_websocket import ConnectionClosed

from vantum.protocol import events as ev
from vantum.protocol.ids import new_id
from vantum.testing.browser_client import BrowserClient
from vantum.testing.stack import open_stack


async def next_error(
    client: BrowserClient, event_id: str | None = None, session_id: str | None = None
) -> dict[str, Any]:
    """The next frame, an error; one caused by a readable frame echoes its
    ``event_id`` and ``session_id`` (docs/protocol.md, Errors)."""
    event = await client.next_event()
    assert ev.is_error(event["eventType"]), event
    assert event["payload"]["message"]
    assert event["sessionId"] == (session_id or client.session_id)
    if event_id is not None:
        assert event["eventId"] == event_id
    else:
        assert len(event["eventId"]) == 36 and event["eventId"][14] == "7"  # a fresh UUIDv7
    return event


async def test_each_bad_frame_gets_its_error_and_session_survives() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.send_raw(b"\xc1\xff garbage")
            assert (await next_error(client))["eventType"] == ev.ERR_MALFORMED

            await client.send_raw(msgpack.packb([1, 2, 3]))
            assert (await next_error(client))["eventType"] == ev.ERR_MALFORMED

            await client.send_raw("a text frame")
            assert (await next_error(client))["eventType"] == ev.ERR_MALFORMED

            unknown = await client.send("no.such.event", {})
            err = await next_error(client, unknown)
            assert (err["eventType"], err["requestType"]) == (ev.ERR_UNKNOWN_EVENT, "no.such.event")

            foreign = new_id()
            sent = await client.send(ev.INPUT_START, {"samplingRate": 16000}, session_id=foreign)
            err = await next_error(client, sent, foreign)
            assert err["eventType"] == ev.ERR_SESSION_MISMATCH

            early = await client.send(ev.INPUT_CHUNK, {"audio": b"\x00\x00" * 160})
            err = await next_error(client, early)
            assert (err["eventType"], err["requestType"]) == (ev.ERR_NOT_STARTED, ev.INPUT_CHUNK)

            slow = await client.send(ev.INPUT_START, {"samplingRate": 5000})
            err = await next_error(client, slow)
            assert (err["eventType"], err["requestType"]) == (ev.ERR_INVALID_RATE, ev.INPUT_START)
            assert "5000" in err["payload"]["message"]

            await client.send(ev.INPUT_START, {"samplingRate": 16000})
            await client.expect(ev.INPUT_START)
            odd = await client.send(ev.INPUT_CHUNK, {"audio": b"\x00"})
            assert (await next_error(client, odd))["eventType"] == ev.ERR_INVALID_FORMAT

            # An ACK echoes the eventType the client used, alias or canonical.
            alias = await client.send("voicechat.audio.start", {"samplingRate": 16000})
            ack = await client.next_event()
            assert (ack["eventType"], ack["eventId"]) == ("voicechat.audio.start", alias)
            assert ack["payload"] == {"success": True}

            # After all that, the session still holds a normal conversation.
            turn = await speak_turn(client, 16_000)
            assert turn.errors == [] and turn.finals == ["hello there"]
            check_answer_events(turn)


async def test_oversize_frame_closes_1009_and_other_sessions_continue() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as bystander:
            async with BrowserClient.connect(stack.ws_url) as attacker:
                big = {"audio": b"\x00" * (10 * 1024 * 1024)}
                # Refused from the frame header: the close may come before the send ends.
                with contextlib.suppress(ConnectionClosed):
                    await attacker.send(ev.INPUT_CHUNK, big)
                with pytest.raises(trio.EndOfChannel):
                    while True:
                        await attacker.next_event()
                assert attacker.close_code == ev.CLOSE_TOO_BIG
            turn = await speak_turn(bystander, 16_000)
            assert turn.errors == [] and turn.finals == ["hello there"]
        with trio.fail_after(5):
            await stack.app.wait_idle()
        assert stack.app.sessions == {}


async def test_many_bad_sessions_do_not_disturb_a_good_one() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as good:

            async def vandal(i: int) -> None:
                async with BrowserClient.connect(stack.ws_url) as bad:
                    for j in range(20):
                        await bad.send_raw(bytes([i, j]) * (j + 1))
                    for _ in range(20):
                        await next_error(bad)

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(vandal, i)
                turn = await speak_turn(good, 16_000)
            assert turn.errors == [] and turn.finals == ["hello there"]
