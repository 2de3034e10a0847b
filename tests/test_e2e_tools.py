"""Tools end to end over real sockets: the fake OpenAI calls tools from its script,
a local HTTP tool server checks the signature, the answer speaks the result, the
client and the call record see ``conversation.tool.*``; ``end_call`` hangs up a
browser and a Twilio call; ``transfer_call`` redirects a Twilio call to an allowed
number only."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import attrs
import trio
from e2e_helpers import FAST_CA

from vantum.agent_spec import AgentSpec, BuiltinTool, HttpTool
from vantum.agents.loader import AgentBook
from vantum.asgi import read_body, serve_app, serve_lifespan
from vantum.protocol import events as ev
from vantum.records import open_store
from vantum.testing.browser_client import BrowserClient, TurnResult
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.fake_twilio import FakeTwilioConfig, place_call, serve_fake_twilio_rest
from vantum.testing.llm_script import parse_llm_script
from vantum.testing.stack import Stack, open_stack
from vantum.tools.signing import SIGNATURE_HEADER, verify

SECRET = "tool-secret-for-the-e2e-tests"
SCRIPT = parse_llm_script(
    [
        {
            "when": "booking",
            "say": "Let me look that up.",
            "tool_calls": [{"name": "lookup_booking", "arguments": {"surname": "Smith"}}],
            "then": "Found it, you are booked for Friday.",
        },
        {"when": "bye", "tool_calls": [{"name": "end_call", "arguments": {}}]},
        {
            "when": "transfer me",
            "tool_calls": [{"name": "transfer_call", "arguments": {"number": "+14155550100"}}],
            "then": "Putting you through.",
        },
        {"when": "pressed 9", "tool_calls": [{"name": "end_call", "arguments": {}}]},
        {
            "when": "pressed 5",
            "tool_calls": [{"name": "transfer_call", "arguments": {"number": "+14155550100"}}],
            "then": "Putting you through.",
        },
        {
            "when": "pressed 7",
            "tool_calls": [{"name": "transfer_call", "arguments": {"number": "+19005550199"}}],
            "then": "Sorry, I cannot put you through to that number.",
        },
    ]
)
OA = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000, script=SCRIPT)


@attrs.define
class ToolServer:
    """The user's tool endpoint: checks Vantum's signature, answers a booking (or an
    injected HTTP status)."""

    requests: list[dict[str, Any]] = attrs.Factory(list)
    verified: list[bool] = attrs.Factory(list)
    status: int = 200

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await serve_lifespan(receive, send)
            return
        body = (await read_body(receive)) or b""
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        ok = verify(SECRET.encode(), headers.get(SIGNATURE_HEADER.lower(), ""), body, time.time())
        self.verified.append(ok)
        self.requests.append(json.loads(body))
        status = self.status if ok else 401
        data = json.dumps({"booking": "Friday, two nights"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": data})


def agent(tool_url: str = "http://127.0.0.1:9/unused") -> AgentSpec:
    return AgentSpec(
        "concierge",
        "You are the front desk.",
        tools=(
            HttpTool("lookup_booking", "Find a booking by surname", tool_url + "/lookup"),
            BuiltinTool("end_call"),
            BuiltinTool("transfer_call"),
        ),
        transfer_numbers=("+14155550100",),
        end_call_goodbye="Goodbye, thanks for calling!",
    )


def use_agent(stack: Stack, spec: AgentSpec) -> None:
    """Every call on this server runs ``spec`` (as ``--agents`` with one agent would)."""
    stack.app.agents = AgentBook({spec.name: spec}, spec.name)


def kinds(turn: TurnResult) -> list[str]:
    return [e["eventType"] for e in turn.events]


async def test_http_tool_is_called_signed_and_its_result_spoken_and_recorded(
    tmp_path: Path,
) -> None:
    tools = ToolServer()
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    async with (
        serve_app(tools.app) as tool_url,
        open_stack(openai=OA, cartesia=FAST_CA, tool_secret=SECRET) as stack,
        open_store(url) as store,
    ):
        stack.app.store = store
        use_agent(stack, agent(tool_url))
        async with BrowserClient.connect(stack.ws_url) as client:
            sid = client.session_id
            await client.send(ev.TEXT_INPUT, {"text": "Can you check my booking?"})
            turn = await client.collect_turn()
            tools.status = 503
            await client.send(ev.TEXT_INPUT, {"text": "And my other booking?"})
            failed_turn = await client.collect_turn()
        with trio.fail_after(5):
            await stack.app.wait_idle()
        record = await store.get_call(sid)
        metrics = stack.app.metrics.render().decode()
        last_request = stack.openai.requests[-1]["messages"]
    # The tool server got the call, signed with the secret.
    assert tools.verified == [True, True]
    first = tools.requests[0]
    assert (first["callId"], first["tool"], first["arguments"]) == (
        sid,
        "lookup_booking",
        {"surname": "Smith"},
    )
    # The client saw the call and its result, then the answer that used it.
    order = kinds(turn)
    call_event = turn.events[order.index(ev.TOOL_CALL)]["payload"]
    result_event = turn.events[order.index(ev.TOOL_RESULT)]["payload"]
    assert call_event["name"] == "lookup_booking"
    assert call_event["arguments"] == {"surname": "Smith"}
    assert call_event["callId"] == first["toolCallId"] == result_event["callId"]
    assert result_event["ok"] is True and result_event["durationMs"] >= 0
    assert turn.text == ["Let me look that up.", "Found it, you are booked for Friday."]
    assert order.index(ev.TOOL_RESULT) < len(order) - 1 - order[::-1].index(ev.RESPONSE_TEXT)
    assert turn.audio_seconds > 0.5 and turn.errors == []
    # A failing endpoint is a failed result the model reads, not a crash.
    failed = failed_turn.events[kinds(failed_turn).index(ev.TOOL_RESULT)]["payload"]
    assert failed["ok"] is False and failed_turn.errors == []
    assert "HTTP 503" in last_request[-1]["content"] and last_request[-1]["role"] == "tool"
    assert 'vantum_tool_failures_total{tool="lookup_booking"} 1.0' in metrics
    assert 'vantum_tool_latency_seconds_count{tool="lookup_booking"} 2.0' in metrics
    # The record holds both calls and results.
    assert record is not None
    recorded = [e.kind for e in record.events]
    assert recorded.count(ev.TOOL_CALL) == 2 and recorded.count(ev.TOOL_RESULT) == 2
    oks = [e.payload["ok"] for e in record.events if e.kind == ev.TOOL_RESULT]
    assert oks == [True, False]


async def test_browser_transfer_is_an_event_and_end_call_hangs_up() -> None:
    async with open_stack(openai=OA, cartesia=FAST_CA) as stack:
        use_agent(stack, agent())
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.send(ev.TEXT_INPUT, {"text": "transfer me to a person"})
            transfer = await client.collect_turn()
            await client.send(ev.TEXT_INPUT, {"text": "that's all, bye"})
            turn = await client.collect_turn()
            with trio.fail_after(5):
                hangup = await client.expect(ev.LIFECYCLE_HANGUP)
                while True:
                    try:
                        await client.next_event()
                    except trio.EndOfChannel:
                        break
        moved = transfer.events[kinds(transfer).index(ev.TOOL_TRANSFER)]["payload"]
        assert moved == {"target": "+14155550100"}
        assert transfer.text == ["Putting you through."]
        assert turn.text == ["Goodbye, thanks for calling!"] and turn.audio_seconds > 0.5
        assert "end_call" in hangup["payload"]["message"]
        assert client.close_code == ev.CLOSE_NORMAL


async def test_twilio_end_call_and_transfer_go_through_the_rest_api() -> None:
    async with serve_fake_twilio_rest() as rest:
        twilio: dict[str, Any] = {
            "twilio_account_sid": rest.config.account_sid,
            "twilio_auth_token": rest.config.auth_token,
            "twilio_api_base": rest.base_url,
        }
        async with open_stack(openai=OA, cartesia=FAST_CA, **twilio) as stack:
            use_agent(stack, agent())
            sids = []
            for digits in ("5", "79"):
                cfg = FakeTwilioConfig(auth_token=rest.config.auth_token, speed=4.0)
                sids.append(cfg.call_sid)
                async with place_call(stack.url, cfg, rest=rest) as call:
                    with trio.fail_after(3):
                        await stack.app.wait_open()
                    for digit in digits:
                        await call.press(digit)
                    with trio.fail_after(10):
                        await call.wait_until(lambda: call.closed)
                with trio.fail_after(5):
                    await stack.app.wait_idle()
            requests = stack.openai.requests
    allowed, refused = sids
    # 5: the allowed number: the live call is redirected to <Dial> it.
    assert rest.redirects == [(allowed, "<Response><Dial>+14155550100</Dial></Response>")]
    # 7: another number is refused (the model hears why); 9: end_call completes the call.
    assert rest.hangups == [refused]
    results = [m for r in requests for m in r["messages"] if m["role"] == "tool"]
    assert any("not allowed" in m["content"] for m in results)
