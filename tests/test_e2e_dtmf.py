"""``send_dtmf`` end to end over real sockets: the fake OpenAI calls it from its script.

Twilio: the keys reach the fake caller as tones in the media it plays, which its DTMF
receiver decodes, after the words said before the call and before the answer after it;
no REST request is made (a call update would end the stream). Telnyx: one
``actions/send_dtmf`` request with the documented body, and no tones in the audio.
A browser conversation: the model reads "send_dtmf needs a phone call". Bad keys: the
model reads why, and the call goes on."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import trio
from e2e_helpers import FAST_CA

from vantum.agent_spec import AgentSpec, BuiltinTool
from vantum.agents.loader import AgentBook
from vantum.protocol import events as ev
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.fake_telnyx import (
    FakeTelnyxConfig,
    new_signing_key,
    place_telnyx_call,
    public_key_b64,
    serve_fake_telnyx_rest,
)
from vantum.testing.fake_twilio import FakeTwilioConfig, place_call, serve_fake_twilio_rest
from vantum.testing.llm_script import parse_llm_script
from vantum.testing.stack import Stack, open_stack

pytestmark = pytest.mark.slow

SCRIPT = parse_llm_script(
    [
        {
            "when": "pressed 3",
            "say": "Pressing one two hash.",
            "tool_calls": [{"name": "send_dtmf", "arguments": {"digits": "12#"}}],
            "then": "Done, the menu has them.",
        },
        {
            "when": "pressed 4",
            "tool_calls": [{"name": "send_dtmf", "arguments": {"digits": "9x"}}],
            "then": "Sorry, that did not work.",
        },
    ]
)
OA = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000, script=SCRIPT)
AGENT = AgentSpec("navigator", "You navigate phone menus.", tools=(BuiltinTool("send_dtmf"),))
KEY = new_signing_key()
RATE = 8000


def use_agent(stack: Stack) -> None:
    stack.app.agents = AgentBook({AGENT.name: AGENT}, AGENT.name)


def tool_results(stack: Stack) -> list[dict[str, Any]]:
    """Every tool result the model was given, once each (later requests repeat them)."""
    results: dict[str, dict[str, Any]] = {}
    for request in stack.openai.requests:
        for m in request["messages"]:
            if m["role"] == "tool":
                results.setdefault(m["tool_call_id"], json.loads(m["content"]))
    return list(results.values())


def loud(pcm: bytes | bytearray) -> bool:
    samples = np.frombuffer(bytes(pcm), "<i2").astype(np.float64)
    return len(samples) > 0 and float(np.sqrt(np.mean(samples**2))) > 300


async def test_twilio_send_dtmf_is_tones_on_the_media_stream_in_order() -> None:
    async with serve_fake_twilio_rest() as rest:
        twilio: dict[str, Any] = {
            "twilio_account_sid": rest.config.account_sid,
            "twilio_auth_token": rest.config.auth_token,
            "twilio_api_base": rest.base_url,
        }
        async with open_stack(openai=OA, cartesia=FAST_CA, **twilio) as stack:
            use_agent(stack)
            cfg = FakeTwilioConfig(auth_token=rest.config.auth_token, speed=4.0)
            async with place_call(stack.url, cfg, rest=rest) as call:
                with trio.fail_after(3):
                    await stack.app.wait_open()
                await call.press("3")

                def answered() -> bool:
                    if call.dtmf.digits != "12#":
                        return False
                    after = call.dtmf.at[-1] + int(0.3 * RATE)  # the tone's end and gap
                    return loud(call.heard[2 * after :])

                with trio.fail_after(15):
                    await call.wait_until(answered)
                await call.press("4")
                with trio.fail_after(15):
                    await stack.openai.wait_until(lambda: len(tool_results(stack)) == 2)
                heard = bytes(call.heard)
                first_key = call.dtmf.at[0]
                assert not call.closed
            with trio.fail_after(5):
                await stack.app.wait_idle()
            results = tool_results(stack)
    # The words said before the call were heard before the first tone.
    assert loud(heard[: 2 * (first_key - int(0.15 * RATE))])
    assert call.dtmf.digits == "12#"  # and nothing else: speech pressed no keys
    assert results[0] == {"ok": True, "result": {"pressed": "12#", "via": "tones", "ms": 600}}
    assert results[1]["ok"] is False and "'x' is not a DTMF key" in results[1]["error"]
    # Nothing went through the REST API: a call update would have ended the stream.
    assert rest.redirects == [] and rest.hangups == []


async def test_telnyx_send_dtmf_is_the_call_control_action() -> None:
    async with serve_fake_telnyx_rest() as rest:
        async with open_stack(
            openai=OA,
            cartesia=FAST_CA,
            telnyx_api_key=rest.api_key,
            telnyx_api_base=rest.base_url,
            telnyx_public_key=public_key_b64(KEY),
        ) as stack:
            use_agent(stack)
            cfg = FakeTelnyxConfig(signing_key=KEY, speed=4.0)
            async with place_telnyx_call(stack.url, rest, cfg) as call:
                with trio.fail_after(3):
                    await stack.app.wait_open()
                await call.press("3")
                with trio.fail_after(15):
                    await stack.openai.wait_until(lambda: len(tool_results(stack)) == 1)
                # The answer after the keys is heard; the call goes on.
                with trio.fail_after(15):
                    await call.wait_until(lambda: loud(call.heard[-2 * RATE :]))
                assert not call.closed
            with trio.fail_after(5):
                await stack.app.wait_idle()
            results = tool_results(stack)
    sent = rest.done("send_dtmf")
    assert [(a.call_control_id, dict(a.body)) for a in sent] == [
        (cfg.call_control_id, {"digits": "12#", "duration_millis": 250})
    ]
    assert results == [{"ok": True, "result": {"pressed": "12#", "via": "carrier"}}]
    assert call.dtmf.digits == ""  # out of band: no tones in the media
    assert [a.action for a in rest.actions] == ["answer", "send_dtmf"]


async def test_browser_send_dtmf_is_a_clear_tool_error() -> None:
    async with open_stack(openai=OA, cartesia=FAST_CA) as stack:
        use_agent(stack)
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.send(ev.TEXT_INPUT, {"text": "I pressed 3"})
            turn = await client.collect_turn()
        with trio.fail_after(5):
            await stack.app.wait_idle()
        results = tool_results(stack)
    assert results == [
        {"ok": False, "error": "send_dtmf needs a phone call; this conversation is not one"}
    ]
    assert turn.text[-1] == "Done, the menu has them." and turn.errors == []
