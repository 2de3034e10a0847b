"""MCP servers as a tool source: the official SDK's stdio client under trio, against
a real stdio MCP server process (the SDK's own ``MCPServer``)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from vantum.agent_spec import AgentSpec, BuiltinTool, McpServer
from vantum.errors import ConfigError
from vantum.pipeline import events as e
from vantum.pipeline.session import Engines
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.protocol.client_events import TextInput
from vantum.providers.base import NO_CALLS, ChatMessage, ToolCall, ToolSchema
from vantum.testing.memory import ScriptedSTT, ScriptedTTS, open_memory_session
from vantum.tools.base import ToolContext, ToolEnv
from vantum.tools.mcp_tools import open_mcp_tools
from vantum.tools.toolbox import ToolBox

pytest.importorskip("mcp")

SERVER = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("bookings")


@server.tool()
def lookup_booking(surname: str) -> dict:
    """Find a booking by surname."""
    return {"surname": surname, "night": "Friday"}


@server.tool()
def explode() -> str:
    """Always fails."""
    raise RuntimeError("the booking system is down")


@server.tool()
def hidden() -> str:
    """Not allowed for the agent."""
    return "no"


if __name__ == "__main__":
    server.run()
'''


@pytest.fixture
def mcp_server(tmp_path: Path) -> McpServer:
    script = tmp_path / "bookings_server.py"
    script.write_text(SERVER)
    return McpServer(
        "bookings",
        command=(sys.executable, str(script)),
        allowed_tools=("lookup_booking", "explode"),
    )


async def test_stdio_mcp_server_tools_run_under_trio(mcp_server: McpServer) -> None:
    async with open_mcp_tools([mcp_server]) as runners:
        agent = AgentSpec("a", "x", tools=(BuiltinTool("end_call"),))
        box = ToolBox.for_agent(agent, b"k", extra=runners)
        names = [s.name for s in box.schemas]
        assert names == ["end_call", "lookup_booking", "explode"]  # "hidden" is not allowed
        lookup = box.schemas[1]
        assert lookup.parameters["required"] == ["surname"]
        ctx = ToolContext("call-1")
        result = await box.run(ToolCall("c1", "lookup_booking", '{"surname": "Smith"}'), ctx)
        assert result.ok and json.loads(result.content)["result"] == {
            "surname": "Smith",
            "night": "Friday",
        }
        failed = await box.run(ToolCall("c2", "explode", "{}"), ctx)
        assert not failed.ok and "explode" in failed.error  # the server words it


async def test_an_mcp_server_that_does_not_start_is_a_config_error(tmp_path: Path) -> None:
    broken = McpServer("broken", command=(sys.executable, str(tmp_path / "missing.py")))
    with pytest.raises(ConfigError, match="MCP server broken"):
        async with open_mcp_tools([broken]):
            pass  # pragma: no cover


class McpLLM:
    """Calls the MCP tool for a booking question, then answers from its result."""

    name = "mcp-llm"

    def __init__(self) -> None:
        self.seen: list[list[ChatMessage]] = []

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = (),
    ) -> Sequence[ToolCall]:
        self.seen.append(list(messages))
        last = messages[-1]
        if last.role == "user" and any(t.name == "lookup_booking" for t in tools):
            return (ToolCall("call_1", "lookup_booking", '{"surname": "Smith"}'),)
        await out.send(f"Booked for {json.loads(last.content)['result']['night']}.")
        return NO_CALLS


async def test_a_call_uses_its_agents_mcp_tools(mcp_server: McpServer) -> None:
    agent = AgentSpec("desk", "x", mcp_servers=(mcp_server,))
    settings = CallSettings(agent=agent, turn=TurnPolicy(idle_prompt_s=None))
    llm = McpLLM()
    engines = Engines(ScriptedSTT(), llm, ScriptedTTS())
    texts: list[str] = []
    results: list[e.ToolFinished] = []
    env = ToolEnv(b"k", None, "call-1")
    with trio.fail_after(30):
        async with open_memory_session(engines, settings, env) as client:
            await client.send.send(TextInput("t1", "my booking?"))
            async for event in client.events:
                if isinstance(event, e.ResponseText):
                    texts.append(event.text)
                elif isinstance(event, e.ToolFinished):
                    results.append(event)
                elif isinstance(event, e.ResponseComplete):
                    break
    assert texts == ["Booked for Friday."]
    assert [(r.name, r.ok) for r in results] == [("lookup_booking", True)]
