"""Tool rounds inside an answer, on the real session pipeline in virtual time
(MockClock, in-memory engines): the filler, what the history keeps, and barge-in
during a slow tool per its ``interruptible`` flag."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import attrs
import pytest
import trio
import trio.testing

from vantum.agent_spec import AgentSpec, PythonTool
from vantum.pipeline import events as e
from vantum.pipeline.session import Engines
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.protocol.client_events import TextInput
from vantum.providers.base import NO_CALLS, ChatMessage, ToolCall, ToolSchema
from vantum.testing.change import ChangeSignal
from vantum.testing.memory import (
    MemoryClient,
    ScriptedSTT,
    ScriptedTTS,
    open_memory_session,
)
from vantum.tools.base import ToolContext, ToolEnv

T = TypeVar("T")


@attrs.define
class Probe:
    """The held tool's side of the test: it starts, waits for ``release``, and notes
    whether it was cancelled."""

    started: trio.Event = attrs.Factory(trio.Event)
    release: trio.Event = attrs.Factory(trio.Event)
    cancelled: bool = False


PROBE = Probe()


async def held_lookup(surname: str) -> dict[str, str]:
    PROBE.started.set()
    try:
        await PROBE.release.wait()
    except trio.Cancelled:
        PROBE.cancelled = True
        raise
    return {"booking": f"{surname}: Friday"}


async def whose_booking(ctx: ToolContext, surname: str) -> dict[str, str]:
    """Answers with the call's own variables: what the caller's token or the resolver set."""
    return {"booking": f"{surname} for {ctx.variables.get('guest', '?')}"}


@pytest.fixture(autouse=True)
def fresh_probe() -> None:
    global PROBE
    PROBE = Probe()


@attrs.define
class ToolLLM:
    """Calls ``lookup`` for a message about a booking (saying ``before`` first), and
    answers ``Done.`` once the result is in; records every request."""

    before: str = "Let me check."
    seen: list[list[ChatMessage]] = attrs.Factory(list)
    name: str = "tool-llm"

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = (),
    ) -> Sequence[ToolCall]:
        self.seen.append(list(messages))
        await trio.sleep(0.05)
        last = messages[-1]
        if last.role == "user" and "booking" in last.content and tools:
            if self.before:
                await out.send(self.before)
            return (ToolCall(f"call_{len(self.seen)}", "lookup", '{"surname": "Smith"}'),)
        await out.send("Done." if last.role == "tool" else f"You said {last.content}.")
        return NO_CALLS


@attrs.define
class Events:
    got: list[tuple[float, e.ServerEvent]] = attrs.Factory(list)
    _changed: ChangeSignal = attrs.Factory(ChangeSignal)

    async def run(self, client: MemoryClient) -> None:
        async for event in client.events:
            self.got.append((trio.current_time(), event))
            self._changed.notify()

    def of(self, kind: type[T]) -> list[tuple[float, T]]:
        return [(t, ev) for t, ev in self.got if isinstance(ev, kind)]

    async def wait_for(self, kind: type[e.ServerEvent], count: int = 1) -> float:
        await self._changed.wait_until(lambda: len(self.of(kind)) >= count)
        return self.of(kind)[count - 1][0]

    def texts(self) -> list[str]:
        return [ev.text for _, ev in self.of(e.ResponseText)]


def settings(interruptible: bool = True, filler_after_ms: int = 800) -> CallSettings:
    tool = PythonTool(
        "lookup",
        "Find a booking",
        "test_tool_answers:held_lookup",
        timeout_s=30.0,
        interruptible=interruptible,
    )
    agent = AgentSpec("desk", "You are a desk.", tools=(tool,), filler_after_ms=filler_after_ms)
    return CallSettings(agent=agent, turn=TurnPolicy(idle_prompt_s=None))


ENV = ToolEnv(b"secret", None, "call-1")


async def test_slow_tool_gets_one_filler_then_the_result_is_spoken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    llm = ToolLLM()
    engines = Engines(ScriptedSTT(), llm, ScriptedTTS())
    events = Events()
    async with open_memory_session(engines, settings(), ENV) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.run, client)
            await client.send.send(TextInput("t1", "about my booking please"))
            await PROBE.started.wait()
            called_at = await events.wait_for(e.ToolCalled)
            await trio.sleep(5.0)  # virtual: the tool is slow
            PROBE.release.set()
            await events.wait_for(e.ResponseComplete)
            nursery.cancel_scope.cancel()
    texts = events.texts()
    assert texts == ["Let me check.", "One moment, let me check.", "Done."]
    filler_at = next(t for t, ev in events.of(e.ResponseText) if "moment" in ev.text)
    assert filler_at - called_at == pytest.approx(0.8, abs=0.01)
    ((_, started),) = events.of(e.ToolCalled)
    ((_, finished),) = events.of(e.ToolFinished)
    assert started == e.ToolCalled("call_1", "lookup", '{"surname": "Smith"}')
    assert finished.ok and finished.duration_ms == pytest.approx(5000, abs=20)
    # The second request carries the call and its result after what was said.
    second = llm.seen[1]
    assert [m.role for m in second[-3:]] == ["user", "assistant", "tool"]
    assert second[-2].content == "Let me check." and second[-2].tool_calls[0].name == "lookup"
    assert second[-1].tool_call_id == "call_1" and "Friday" in second[-1].content


async def test_no_filler_for_a_fast_tool_and_no_tools_without_an_agent(
    autojump_clock: trio.testing.MockClock,
) -> None:
    llm = ToolLLM()
    engines = Engines(ScriptedSTT(), llm, ScriptedTTS())
    events = Events()
    async with open_memory_session(engines, settings(), ENV) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.run, client)
            PROBE.release.set()
            await client.send.send(TextInput("t1", "about my booking please"))
            await events.wait_for(e.ResponseComplete)
            # Same call without an agent: plain text, no tool round.
            nursery.cancel_scope.cancel()
    assert events.texts() == ["Let me check.", "Done."]
    plain = Events()
    no_agent = attrs.evolve(settings(), agent=None)
    async with open_memory_session(engines, no_agent, ENV) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(plain.run, client)
            await client.send.send(TextInput("t1", "about my booking please"))
            await plain.wait_for(e.ResponseComplete)
            nursery.cancel_scope.cancel()
    assert plain.texts() == ["You said about my booking please."]
    assert plain.of(e.ToolCalled) == []


@pytest.mark.parametrize("interruptible", [True, False])
async def test_barge_in_during_a_slow_tool(
    autojump_clock: trio.testing.MockClock, interruptible: bool
) -> None:
    llm = ToolLLM()
    engines = Engines(ScriptedSTT(), llm, ScriptedTTS())
    events = Events()
    async with open_memory_session(engines, settings(interruptible), ENV) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.run, client)
            await client.send.send(TextInput("t1", "about my booking please"))
            await PROBE.started.wait()
            await events.wait_for(e.OutputStarted)  # "Let me check." is being heard
            await client.send.send(TextInput("t2", "never mind"))
            await trio.testing.wait_all_tasks_blocked()
            assert PROBE.cancelled is interruptible
            if not interruptible:
                assert events.of(e.OutputCancelled) == []  # waits for the tool to finish
                PROBE.release.set()
            await events.wait_for(e.ResponseComplete, 2)
            nursery.cancel_scope.cancel()
    assert events.of(e.OutputCancelled)
    finished = events.of(e.ToolFinished)
    next_request = llm.seen[-1]
    assert next_request[-1] == ChatMessage("user", "never mind")
    roles = [m.role for m in next_request[1:]]
    if interruptible:
        assert finished == []
        assert "tool" not in roles  # the cancelled call is not in the history
    else:
        assert [ev.ok for _, ev in finished] == [True]
        # The finished call and its result landed, between the user and what was heard.
        assert roles[:3] == ["user", "assistant", "tool"]
        assert "Friday" in next_request[3].content
    assert "Done." not in events.texts()


async def test_a_python_tool_sees_the_calls_own_variables(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Per-call variables (token claims, the resolver) override the agent's defaults."""
    llm = ToolLLM()
    tool = PythonTool("lookup", "Find a booking", "test_tool_answers:whose_booking")
    agent = AgentSpec("desk", "You are a desk.", tools=(tool,), variables={"guest": "default"})
    call = CallSettings(
        agent=agent, variables={"guest": "Ada"}, turn=TurnPolicy(idle_prompt_s=None)
    )
    events = Events()
    engines = Engines(ScriptedSTT(), llm, ScriptedTTS())
    async with open_memory_session(engines, call, ENV) as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(events.run, client)
            await client.send.send(TextInput("t1", "about my booking please"))
            await events.wait_for(e.ResponseComplete)
            nursery.cancel_scope.cancel()
    result = llm.seen[1][-1]
    assert result.role == "tool" and "Smith for Ada" in result.content
