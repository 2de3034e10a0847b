"""MCP servers as a tool source, through the official SDK (``pip install vantum[mcp]``).

The ``mcp`` package is built on anyio, so its stdio and streamable-HTTP clients run
under trio unchanged (checked: ``tests/test_mcp_tools.py`` drives a real stdio
server). A call opens one client session per MCP server of its agent when the
responder starts and keeps it for the whole call — a stdio server is a process, and
starting one per tool call would cost more than the call. The tools each server
lists (limited to ``allowed_tools`` when set) join the agent's own; a server that
cannot be started or listed is reported once and the agent goes on without it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..agent_spec import McpServer
from ..errors import ConfigError
from ..providers.base import ToolSchema
from .base import ToolContext, ToolResult, ToolRunner, failed

if TYPE_CHECKING:
    from mcp import ClientSession

log = logging.getLogger("vantum.tools.mcp")


@attrs.frozen
class McpRunner:
    server: McpServer
    session: ClientSession
    tool: ToolSchema

    @property
    def schema(self) -> ToolSchema:
        return self.tool

    @property
    def timeout_s(self) -> float:
        return self.server.timeout_s

    @property
    def interruptible(self) -> bool:
        return self.server.interruptible

    async def run(self, call_id: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        from mcp import types

        result = await self.session.call_tool(self.tool.name, arguments)
        if not isinstance(result, types.CallToolResult):
            return failed(f"{self.tool.name} asked for input a phone call cannot give")
        text = " ".join(c.text for c in result.content if isinstance(c, types.TextContent))
        if result.is_error:
            return failed(text or f"{self.tool.name} failed")
        if result.structured_content is not None:
            return ToolResult(True, result.structured_content)
        try:
            return ToolResult(True, json.loads(text))
        except ValueError:
            return ToolResult(True, text)


@contextlib.asynccontextmanager
async def open_mcp_tools(servers: Sequence[McpServer]) -> AsyncIterator[list[ToolRunner]]:
    """Connect to every server, list its tools; close them all on exit.

    Raises :class:`ConfigError` when the SDK is missing or a server cannot be
    reached or listed (the caller reports it and goes on without MCP tools).
    """
    if not servers:
        yield []
        return
    try:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client
        from mcp.client.streamable_http import streamable_http_client
    except ImportError as exc:
        raise ConfigError("MCP servers need the mcp package: pip install 'vantum[mcp]'") from exc
    runners: list[ToolRunner] = []
    connected = False
    try:
        async with contextlib.AsyncExitStack() as stack:
            for server in servers:
                if server.command:
                    params = StdioServerParameters(
                        command=server.command[0], args=list(server.command[1:])
                    )
                    read, write = await stack.enter_async_context(stdio_client(params))
                elif server.url:
                    read, write = await stack.enter_async_context(
                        streamable_http_client(server.url)
                    )
                else:
                    raise ConfigError(f"MCP server {server.name} has neither command nor url")
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                listed = await session.list_tools()
                allowed = server.allowed_tools
                for tool in listed.tools:
                    if allowed is not None and tool.name not in allowed:
                        continue
                    schema = ToolSchema(tool.name, tool.description or "", tool.input_schema)
                    runners.append(McpRunner(server, session, schema))
            connected = True
            yield runners
    except Exception as exc:
        # The SDK's clients run task groups, so a failure while connecting arrives
        # wrapped in exception groups; only those become one clear ConfigError.
        if connected:
            raise
        names = ", ".join(s.name for s in servers)
        raise ConfigError(f"MCP server {names}: {_first_cause(exc)}") from exc


def _first_cause(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return f"{type(exc).__name__}: {exc}"


__all__ = ["McpRunner", "open_mcp_tools"]
