"""Tool calls from the model to the runtime: the streamed ``tool_calls`` assembly
(Hypothesis), the fake OpenAI's scripted calls over a real socket, signatures,
schemas from signatures, and the toolbox's failure handling."""

from __future__ import annotations

import importlib.util
import itertools
import json
from pathlib import Path
from typing import Any, Literal

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from vantum.agent_spec import AgentSpec, BuiltinTool, HttpTool, PythonTool
from vantum.asgi import serve_app
from vantum.errors import ConfigError
from vantum.providers.base import ChatMessage, ToolCall, ToolSchema
from vantum.providers.llm_openai import OpenAILLM
from vantum.providers.local_llm import ScriptedResponder
from vantum.providers.openai_sse import ChatStreamParser, MalformedStreamError
from vantum.providers.tool_calls import ToolCallAccumulator
from vantum.testing.fake_openai import FakeOpenAIConfig, serve_fake_openai
from vantum.testing.llm_script import ScriptError, parse_llm_script
from vantum.tools.base import ToolContext, ToolFailure
from vantum.tools.http_tool import HttpRunner
from vantum.tools.python_tool import derive_schema
from vantum.tools.signing import sign, verify
from vantum.tools.toolbox import ToolBox

# --- the streamed tool_calls assembly ------------------------------------------------


def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    data = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice]}
    return b"data: " + json.dumps(data).encode() + b"\n\n"


def pieces(text: str, cuts: list[int]) -> list[str]:
    points = sorted({0, len(text), *(c % (len(text) + 1) for c in cuts)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def tool_stream(calls: list[tuple[str, str, list[str]]], interleave: bool) -> bytes:
    """A body as OpenAI streams tool calls: per call a first delta with index, id, type
    and name (empty arguments), then argument fragments under the same index."""
    body = [chunk({"role": "assistant", "content": None, "refusal": None})]
    heads = [
        chunk(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": ""},
                    }
                ]
            }
        )
        for i, (call_id, name, _) in enumerate(calls)
    ]
    frags = [
        [chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in parts]
        for i, (_, _, parts) in enumerate(calls)
    ]
    if interleave:  # all heads first, then fragments round-robin (parallel calls)
        body += heads
        for group in itertools.zip_longest(*frags):
            body += [c for c in group if c is not None]
    else:
        for head, fr in zip(heads, frags, strict=True):
            body += [head, *fr]
    body.append(chunk({}, "tool_calls"))
    return b"".join(body) + b"data: [DONE]\n\n"


arguments = st.dictionaries(
    st.text(min_size=1, max_size=6), st.one_of(st.text(max_size=10), st.integers()), max_size=4
)


@given(
    st.lists(arguments, min_size=1, max_size=3),
    st.lists(st.lists(st.integers(0, 200), max_size=6), min_size=3, max_size=3),
    st.booleans(),
    st.lists(st.integers(0, 5000), max_size=8),
)
def test_any_split_of_the_arguments_gives_the_same_calls(
    args: list[dict[str, Any]], cuts: list[list[int]], interleave: bool, body_cuts: list[int]
) -> None:
    texts = [json.dumps(a) for a in args]
    calls = [(f"call_{i}", f"tool_{i}", pieces(text, cuts[i])) for i, text in enumerate(texts)]
    body = tool_stream(calls, interleave)
    parser = ChatStreamParser()
    events = []
    for part in pieces(body.decode("latin-1"), body_cuts):
        events += list(parser.feed(part.encode("latin-1")))
    assert events == []  # no text: tool calls are not text events
    assert parser.done
    got = parser.tool_calls.calls()
    assert got == tuple(ToolCall(f"call_{i}", f"tool_{i}", t) for i, t in enumerate(texts))
    assert [json.loads(c.arguments) for c in got] == args


def test_text_before_a_call_is_text_and_a_bad_delta_is_malformed() -> None:
    body = chunk({"content": "Let me check."}) + chunk(
        {"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f", "arguments": "{}"}}]}
    )
    parser = ChatStreamParser()
    assert list(parser.feed(body)) == ["Let me check."]
    assert parser.tool_calls.calls() == (ToolCall("c1", "f", "{}"),)
    with pytest.raises(MalformedStreamError):
        list(ChatStreamParser().feed(chunk({"tool_calls": [{"id": "no index"}]})))
    acc = ToolCallAccumulator()
    acc.feed([{"index": 0, "function": {"arguments": "{}"}}])
    with pytest.raises(ValueError, match="no function name"):
        acc.calls()


# --- the fake OpenAI streams scripted tool calls; the client sends tools -------------

SCRIPT = parse_llm_script(
    [
        {
            "when": "booking",
            "say": "Let me look.",
            "tool_calls": [{"name": "lookup_booking", "arguments": {"surname": "Smith"}}],
            "then": "You are booked for Friday.",
        },
        {"when": "weather", "then": "Sunny."},
    ]
)
LOOKUP = ToolSchema(
    "lookup_booking",
    "Find a booking",
    {"type": "object", "properties": {"surname": {"type": "string"}}},
)


async def collect(
    llm: OpenAILLM, messages: list[ChatMessage], tools: list[ToolSchema]
) -> tuple[str, list[ToolCall]]:
    tx, rx = trio.open_memory_channel[str](1000)
    calls = await llm.stream(messages, tx, tools)
    tx.close()
    return "".join([d async for d in rx]), list(calls)


async def test_fake_streams_scripted_tool_calls_and_the_client_joins_them() -> None:
    config = FakeOpenAIConfig(first_token_latency=0, tokens_per_second=5000, script=SCRIPT)
    async with serve_fake_openai(config) as fake, OpenAILLM(fake.api_key, fake.base_url) as llm:
        user = [ChatMessage("user", "I want to check my booking")]
        text, calls = await collect(llm, user, [LOOKUP])
        assert text == "Let me look."
        (call,) = calls
        assert (call.name, json.loads(call.arguments)) == ("lookup_booking", {"surname": "Smith"})
        assert call.id.startswith("call_")
        sent = fake.requests[-1]
        assert sent["tools"] == [
            {
                "type": "function",
                "function": {
                    "name": "lookup_booking",
                    "description": "Find a booking",
                    "parameters": dict(LOOKUP.parameters),
                },
            }
        ]
        # The results go back as the API wants them; the step's "then" answers.
        history = [
            *user,
            ChatMessage("assistant", "Let me look.", tool_calls=(call,)),
            ChatMessage("tool", '{"ok": true}', tool_call_id=call.id),
        ]
        text, calls = await collect(llm, history, [LOOKUP])
        assert (text, calls) == ("You are booked for Friday.", [])
        assert fake.requests[-1]["messages"][1]["tool_calls"][0]["id"] == call.id
        # Tools the request does not offer are never called; unscripted text is as today.
        text, calls = await collect(llm, user, [])
        assert calls == [] and text.startswith("You said: I want to check my booking")
        assert (await collect(llm, [ChatMessage("user", "the weather?")], []))[0] == "Sunny."
        # A tool result that answers no call is refused, as by the service.
        orphan = [*user, ChatMessage("tool", "{}", tool_call_id="call_nope")]
        with pytest.raises(Exception, match="role 'tool'"):
            await collect(llm, orphan, [LOOKUP])


def test_script_errors_name_the_step() -> None:
    with pytest.raises(ScriptError, match="step 1: 'when'"):
        parse_llm_script([{"when": "a", "then": "b"}, {"then": "c"}])
    with pytest.raises(ScriptError, match="must be a JSON list"):
        parse_llm_script({"when": "a"})
    with pytest.raises(ScriptError, match=r"tool_calls\[0\]"):
        parse_llm_script([{"when": "a", "tool_calls": [{"arguments": {}}]}])


# --- signatures, schemas, the toolbox ------------------------------------------------


def test_signature_verifies_and_rejects_tampering_and_replay() -> None:
    body = b'{"callId":"c","tool":"t","arguments":{}}'
    header = sign(b"s3cret", body, 1_700_000_000)
    assert verify(b"s3cret", header, body, now=1_700_000_010)
    assert not verify(b"s3cret", header, body + b" ", now=1_700_000_010)
    assert not verify(b"other", header, body, now=1_700_000_010)
    assert not verify(b"s3cret", header, body, now=1_700_000_000 + 301)
    assert not verify(b"s3cret", "garbage", body, now=1_700_000_000)


async def typed_tool(
    ctx: ToolContext, city: str, nights: int, when: Literal["am", "pm"], note: str | None = None
) -> dict[str, Any]:
    """Book a room."""
    return {"city": city, "nights": nights, "call": ctx.call_id}


def test_schema_is_derived_from_the_signature() -> None:
    assert derive_schema(typed_tool) == {
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "nights": {"type": "integer"},
            "when": {"enum": ["am", "pm"]},
            "note": {"type": "string"},
        },
        "required": ["city", "nights", "when"],
    }


async def failing_tool(reason: str) -> None:
    if reason == "refuse":
        raise ToolFailure("no rooms left")
    raise RuntimeError("bug in user code")


async def slow_tool() -> str:
    await trio.sleep(60)
    return "late"


def agent(*tools: Any) -> AgentSpec:
    return AgentSpec("a", "be helpful", tools=tools, transfer_numbers=("+14155550100",))


async def test_toolbox_turns_every_failure_into_a_result(
    autojump_clock: trio.testing.MockClock,
) -> None:
    box = ToolBox.for_agent(
        agent(
            PythonTool("book", "", "test_tool_calls:typed_tool"),
            PythonTool("fail", "Fails", "test_tool_calls:failing_tool"),
            PythonTool("slow", "Slow", "test_tool_calls:slow_tool", timeout_s=2.0),
            BuiltinTool("end_call"),
            BuiltinTool("transfer_call"),
        ),
        b"k",
    )
    assert [s.name for s in box.schemas] == ["book", "fail", "slow", "end_call", "transfer_call"]
    assert box.schemas[0].description == "Book a room."
    ctx = ToolContext("CA1", transfer_numbers=("+14155550100",))

    async def run(name: str, arguments: str) -> tuple[bool, str]:
        result = await box.run(ToolCall("c", name, arguments), ctx)
        return result.ok, result.content

    ok, content = await run("book", '{"city": "Oslo", "nights": 2, "when": "am"}')
    assert ok and json.loads(content)["result"] == {"city": "Oslo", "nights": 2, "call": "CA1"}
    assert await run("book", "{not json") == (
        False,
        json.dumps({"ok": False, "error": "the arguments for book were not valid JSON"}),
    )
    assert not (await run("book", "[1]"))[0]
    assert "wrong arguments" in (await run("book", '{"town": "Oslo"}'))[1]
    assert "no rooms left" in (await run("fail", '{"reason": "refuse"}'))[1]
    assert "RuntimeError" in (await run("fail", '{"reason": "crash"}'))[1]
    start = trio.current_time()
    assert "within 2 seconds" in (await run("slow", ""))[1]
    assert trio.current_time() - start == pytest.approx(2.0)
    assert "no tool named" in (await run("nope", "{}"))[1]
    end = await box.run(ToolCall("c", "end_call", "{}"), ctx)
    assert end.ok and end.action == "end_call"
    assert (await run("transfer_call", '{"number": "+14155550100"}'))[0]
    refused = await run("transfer_call", '{"number": "+19005550000"}')
    assert not refused[0] and "not allowed" in refused[1]


def test_tools_that_cannot_run_fail_at_build() -> None:
    with pytest.raises(ConfigError, match="cannot import"):
        ToolBox.for_agent(agent(PythonTool("x", "", "no_such_module_here:f")), b"k")
    with pytest.raises(ConfigError, match="two tools named"):
        ToolBox.for_agent(agent(BuiltinTool("end_call"), BuiltinTool("end_call")), b"k")
    # Every built-in the agents file accepts is implemented (send_dtmf was the last).
    dtmf = ToolBox.for_agent(agent(BuiltinTool("send_dtmf")), b"k")
    assert dtmf.schemas[0].parameters["required"] == ["digits"]
    http = HttpTool("h", "", "http://127.0.0.1:1/x")
    assert ToolBox.for_agent(agent(http), b"k").schemas[0].name == "h"


async def test_scripted_responder_ends_the_call_on_goodbye() -> None:
    responder = ScriptedResponder()
    end = ToolSchema("end_call", "", {})
    tx, rx = trio.open_memory_channel[str](100)
    calls = await responder.stream([ChatMessage("user", "ok, goodbye!")], tx, [end])
    assert [c.name for c in calls] == ["end_call"]
    # Without the tool (or without a goodbye) it talks as before.
    assert await responder.stream([ChatMessage("user", "ok, goodbye!")], tx, []) == ()
    assert await responder.stream([ChatMessage("user", "hello")], tx, [end]) == ()
    tx.close()
    assert "Goodbye" in "".join([d async for d in rx])


async def test_the_example_tool_server_answers_signed_requests_only() -> None:
    path = Path(__file__).parent.parent / "examples" / "booking_tool_server.py"
    spec = importlib.util.spec_from_file_location("booking_tool_server", path)
    assert spec is not None and spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    vars(example)["SECRET"] = b"example-secret"  # what VANTUM_TOOL_SECRET would set
    async with serve_app(example.app) as url:
        tool = HttpTool("lookup_booking", "Find a booking", url + "/tools/lookup_booking")
        ctx = ToolContext("call-1")
        found = await HttpRunner(tool, b"example-secret").run("c1", {"surname": "Smith"}, ctx)
        assert found.ok and found.value["found"] is True
        forged = await HttpRunner(tool, b"not-the-secret").run("c2", {"surname": "Smith"}, ctx)
        assert not forged.ok and "HTTP 401" in forged.error
        gone = HttpTool("lookup_booking", "", "http://127.0.0.1:1/tools/lookup_booking")
        unreachable = await HttpRunner(gone, b"k").run("c3", {}, ctx)
        assert not unreachable.ok and "could not be reached" in unreachable.error


def test_a_history_bound_never_leaves_tool_results_without_their_call() -> None:
    from vantum.pipeline.context import Conversation

    conversation = Conversation("sys", max_messages=3)
    call = ToolCall("c1", "lookup", "{}")
    conversation.add_user("my booking?")
    conversation.add(ChatMessage("assistant", "", tool_calls=(call,)))
    conversation.add(ChatMessage("tool", "{}", tool_call_id="c1"))
    conversation.add_assistant("Friday.")  # the bound drops the user message...
    messages = conversation.messages()
    # ...and with it the round's call: its result alone would be refused by the API.
    assert [m.role for m in messages] == ["system", "assistant"]
    assert messages[1].content == "Friday."


def test_fakes_refuses_a_bad_llm_script(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from vantum.cli import main

    script = tmp_path / "script.json"
    script.write_text('[{"when": "booking", "tool_calls": [{"arguments": {}}]}]')
    assert main(["fakes", "--llm-script", str(script)]) == 2
    assert "step 0: tool_calls[0] needs a 'name'" in capsys.readouterr().err
    assert main(["fakes", "--llm-script", str(tmp_path / "missing.json")]) == 2
    assert "No such file" in capsys.readouterr().err
