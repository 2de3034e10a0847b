"""Agents end to end over real sockets with the fakes: the greeting is heard before
the caller says anything (browser and Twilio), the agent is picked by URL, token or
resolver, the resolver falls back on timeout, unknown agents are refused clearly,
and the call record names the agent (issue 15)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, speak_turn

from vantum.protocol import events as ev
from vantum.records import open_store
from vantum.server.auth import new_secret
from vantum.server.call_tokens import call_token
from vantum.testing.browser_client import BrowserClient, ServerRefused
from vantum.testing.fake_resolver import serve_fake_resolver
from vantum.testing.fake_twilio import FakeTwilioConfig, fetch_twiml, place_call
from vantum.testing.stack import Stack, open_stack

AGENTS = """\
default = "concierge"

[agents.concierge]
instructions = "You are the front desk of {hotel}. Caller: {caller}."
greeting = "Hello, {hotel}, how can I help?"
variables = { hotel = "Hotel Example" }

[agents.support]
instructions = "You are support. Order {order}."
greeting = "Support here. Is this about order {order}?"
variables = { order = "none" }
greeting_interruptible = false

[agents.quiet]
instructions = "No greeting here."
"""

LONG_GREETING = (
    "Welcome to the long greeting of this agent, which goes on for a good while so "
    "that there is time to interrupt it before it ends."
)


def agents_file(tmp_path: Path, text: str = AGENTS) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return str(path)


def spoken(stack: Stack, uid: str) -> str:
    """What the TTS was asked to say for one utterance."""
    return "".join(r.transcript for r in stack.cartesia.requests[uid]).strip()


def counter(stack: Stack, name: str, labels: dict[str, str]) -> float:
    return stack.app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_browser_greeting_comes_first_without_the_llm_and_enters_the_history(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    async with open_stack(
        deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, agents_file=agents_file(tmp_path)
    ) as stack:
        async with open_store(url) as store:
            stack.app.store = store
            connect_at = trio.current_time()
            async with BrowserClient.connect(stack.ws_url + "?agent=concierge") as client:
                sid = client.session_id
                start_at = trio.current_time()
                await client.start(16_000)
                greeting = await client.collect_turn()
                assert greeting.first_audio_at is not None
                logging.getLogger("test").warning(
                    "browser: connect -> first greeting audio %.1f ms, start -> %.1f ms",
                    (greeting.first_audio_at - connect_at) * 1000,
                    (greeting.first_audio_at - start_at) * 1000,
                )
                assert greeting.errors == []
                assert " ".join(greeting.text) == "Hello, Hotel Example, how can I help?"
                assert greeting.audio_seconds > 0.5
                assert stack.openai.requests == []  # straight to TTS
                assert spoken(stack, greeting.utterance_ids[0]) == " ".join(greeting.text)

                turn = await speak_turn(client, 16_000)
                assert turn.finals == ["hello there"]
                messages = stack.openai.requests[-1]["messages"]
                assert messages[0] == {
                    "role": "system",
                    "content": "You are the front desk of Hotel Example. Caller: unknown.",
                }
                assert messages[1] == {
                    "role": "assistant",
                    "content": "Hello, Hotel Example, how can I help?",
                }
                assert messages[2] == {"role": "user", "content": "hello there"}
            with trio.fail_after(5):
                await stack.app.wait_idle()
            record = await store.get_call(sid)
    assert record is not None and record.summary.agent == "concierge"
    assert record.transcript()[0] == ("assistant", "Hello, Hotel Example, how can I help?")
    assert counter(stack, "vantum_agent_calls_total", {"agent": "concierge"}) == 1


async def test_an_agent_without_greeting_waits_for_the_caller(tmp_path: Path) -> None:
    async with open_stack(
        deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, agents_file=agents_file(tmp_path)
    ) as stack:
        async with BrowserClient.connect(stack.ws_url + "?agent=quiet") as client:
            await client.start(16_000)
            turn = await speak_turn(client, 16_000)
            # The first answer is the LLM's, to what the caller said.
            assert turn.finals == ["hello there"] and "You said" in " ".join(turn.text)
            assert [m["role"] for m in stack.openai.requests[0]["messages"]] == ["system", "user"]


@pytest.mark.parametrize("interruptible", [True, False])
async def test_greeting_barge_in_follows_its_flag(tmp_path: Path, interruptible: bool) -> None:
    text = AGENTS.replace(
        'instructions = "No greeting here."',
        f'instructions = "x"\ngreeting = "{LONG_GREETING}"\n'
        f"greeting_interruptible = {str(interruptible).lower()}",
    )
    async with open_stack(
        openai=FAST_OA, cartesia=FAST_CA, agents_file=agents_file(tmp_path, text)
    ) as stack:
        async with BrowserClient.connect(stack.ws_url + "?agent=quiet") as client:
            await client.start(16_000)
            first = await client.expect(ev.OUTPUT_CHUNK)
            greeting_uid = first["payload"]["utteranceId"]
            await client.send(ev.TEXT_INPUT, {"text": "hi there"})
            kinds: list[tuple[str, Any]] = []
            finished = 0
            while finished < 2:  # the greeting's and the typed turn's metrics.turn
                event = await client.next_event()
                kinds.append((event["eventType"], event.get("payload", {}).get("utteranceId")))
                finished += event["eventType"] == ev.METRICS_TURN
    cancelled = (ev.OUTPUT_CANCEL, greeting_uid) in kinds
    completed = (ev.OUTPUT_COMPLETE, greeting_uid) in kinds
    assert cancelled is interruptible and completed is not interruptible
    assert len(stack.openai.requests) == 1  # the typed turn was answered either way


async def test_token_claims_choose_the_agent_and_its_variables(tmp_path: Path) -> None:
    secret = new_secret()
    async with open_stack(
        openai=FAST_OA, cartesia=FAST_CA, auth_secret=secret, agents_file=agents_file(tmp_path)
    ) as stack:
        token = call_token(secret, agent="support", variables={"order": "1234"}, subject="ada")
        async with BrowserClient.connect(stack.ws_url, token=token) as client:
            await client.start(16_000)
            greeting = await client.collect_turn()
            assert " ".join(greeting.text) == "Support here. Is this about order 1234?"
        # An unsigned ?agent= cannot contradict the token.
        with pytest.raises(ServerRefused) as refused:
            async with BrowserClient.connect(stack.ws_url + "?agent=concierge", token=token):
                pass
        event = refused.value.event
        assert event["eventType"] == ev.ERR_AGENT
        assert event["payload"]["reason"] == "agent_mismatch"
        assert refused.value.close_code == ev.CLOSE_POLICY


@pytest.mark.parametrize("path", ["/ws", "/voicechat/ws"])
async def test_an_unknown_agent_gets_a_clear_error(tmp_path: Path, path: str) -> None:
    async with open_stack(agents_file=agents_file(tmp_path)) as stack:
        url = stack.url.replace("http://", "ws://") + path + "?agent=nobody"
        with pytest.raises(ServerRefused) as refused:
            async with BrowserClient.connect(url):
                pass
        event = refused.value.event
        # The voicechat dialect names errors its own way and carries ours as `code`.
        code = event["payload"].get("code") if path == "/voicechat/ws" else event["eventType"]
        assert code == ev.ERR_AGENT
        assert event["payload"]["reason"] == "unknown_agent"
        assert "nobody" in event["payload"]["message"]
        assert refused.value.close_code == ev.CLOSE_POLICY
        labels = {"reason": "agent_unknown_agent"}
        assert counter(stack, "vantum_sessions_refused_total", labels) == 1
        assert stack.app.sessions == {}


async def test_resolver_picks_the_agent_per_called_number(tmp_path: Path) -> None:
    secret = b"r" * 32
    routes = {"+15550002222": {"agent": "support", "variables": {"order": "77"}}}
    async with serve_fake_resolver(secret, routes) as resolver:
        async with open_stack(
            deepgram=FAST_DG,
            openai=FAST_OA,
            cartesia=FAST_CA,
            agents_file=agents_file(tmp_path),
            agent_resolver_url=resolver.url,
            agent_resolver_secret=secret.decode(),
        ) as stack:
            for number, expected in [
                ("+15550002222", "Support here. Is this about order 77?"),
                ("+15550003333", "Hello, Hotel Example, how can I help?"),
            ]:
                done = len(stack.cartesia.completed)
                cfg = FakeTwilioConfig(to_number=number, speed=None)
                async with place_call(stack.url, cfg) as call:

                    def greeted(n: int = done) -> bool:
                        completed = stack.cartesia.completed
                        return len(completed) > n and f"{completed[n]}:end" in call.marks_echoed

                    with trio.fail_after(10):
                        await call.wait_until(greeted)
                    assert spoken(stack, stack.cartesia.completed[done]) == expected
                    assert call.heard_seconds > 0.5
                with trio.fail_after(5):
                    await stack.app.wait_idle()
    assert stack.openai.requests == []  # both greetings without the LLM
    assert resolver.bad_signatures == 0
    facts = resolver.requests[0]
    assert facts["to"] == "+15550002222" and facts["transport"] == "twilio"
    assert facts["from"] == cfg.from_number and facts["agent"] is None


async def test_resolver_timeout_falls_back_to_the_default_agent(tmp_path: Path) -> None:
    secret = b"r" * 32
    async with serve_fake_resolver(secret, hang=True) as resolver:
        async with open_stack(
            openai=FAST_OA,
            cartesia=FAST_CA,
            agents_file=agents_file(tmp_path),
            agent_resolver_url=resolver.url,
            agent_resolver_secret=secret.decode(),
            agent_resolver_timeout_s=0.3,
        ) as stack:
            async with BrowserClient.connect(stack.ws_url) as client:
                await client.start(16_000)
                greeting = await client.collect_turn()
            assert " ".join(greeting.text) == "Hello, Hotel Example, how can I help?"
            assert resolver.answered == 0  # however far the request got, it got no answer
            timeouts = counter(stack, "vantum_agent_resolver_failures_total", {"reason": "timeout"})
            assert timeouts == 1


async def test_twilio_greeting_starts_with_the_stream(tmp_path: Path) -> None:
    async with open_stack(
        deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, agents_file=agents_file(tmp_path)
    ) as stack:
        cfg = FakeTwilioConfig(speed=None)
        dialled_at = trio.current_time()
        async with place_call(stack.url, cfg, voice_path="/twilio/voice?agent=support") as call:
            started_at = trio.current_time()  # the stream's `start` has been sent
            assert call.config.custom_parameters["agent"] == "support"
            with trio.fail_after(10):
                await call.wait_until(lambda: len(call.received) > 0)
            now = trio.current_time()
            logging.getLogger("test").warning(
                "twilio: webhook -> first greeting audio %.1f ms, stream start -> %.1f ms",
                (now - dialled_at) * 1000,
                (now - started_at) * 1000,
            )
            with trio.fail_after(10):
                await call.wait_until(
                    lambda: (
                        bool(stack.cartesia.completed)
                        and f"{stack.cartesia.completed[0]}:end" in call.marks_echoed
                    )
                )
            uid = stack.cartesia.completed[0]
            assert spoken(stack, uid) == "Support here. Is this about order none?"
            assert stack.openai.requests == []
        # A number configured with an agent the server lacks: an apology, no stream.
        answer = await fetch_twiml(stack.url + "/twilio/voice?agent=nobody", FakeTwilioConfig())
        assert answer.status == 200 and answer.stream_url is None
        assert "<Say>" in answer.body and "<Hangup />" in answer.body


async def test_a_phone_call_missing_a_required_variable_is_closed(tmp_path: Path) -> None:
    text = AGENTS + (
        '\n[agents.orders]\ninstructions = "Order {order}"\nrequired_variables = ["order"]\n'
    )
    async with open_stack(cartesia=FAST_CA, agents_file=agents_file(tmp_path, text)) as stack:
        cfg = FakeTwilioConfig(speed=None)
        async with place_call(stack.url, cfg, voice_path="/twilio/voice?agent=orders") as call:
            with trio.fail_after(5):
                await call.wait_until(lambda: call.close_code is not None)
            assert call.close_code == ev.CLOSE_POLICY
        labels = {"reason": "agent_missing_variable"}
        assert counter(stack, "vantum_sessions_refused_total", labels) == 1
        assert stack.cartesia.completed == []
