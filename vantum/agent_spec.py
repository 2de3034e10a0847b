"""The frozen values an agent definition is made of.

An agents file (TOML, ``vantum serve --agents FILE``) is parsed into
:class:`AgentSpec` values once at start-up; each call then carries the one it runs
inside its :class:`~vantum.pipeline.settings.CallSettings`. These classes are the
contract between the parts that read agents (the loader, per-call selection, the
greeting) and the parts that act on them (the tool runtime, call control): nothing
here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

JsonSchema = Mapping[str, Any]
"""A JSON Schema object describing a tool's arguments (as OpenAI's ``parameters``)."""

EMPTY_SCHEMA: JsonSchema = {"type": "object", "properties": {}}


@attrs.frozen
class HttpTool:
    """A tool answered by the user's HTTP endpoint.

    Vantum POSTs ``{callId, tool, arguments}`` as JSON, signed with HMAC-SHA256;
    the JSON body of a 2xx response is the result the LLM sees.
    """

    name: str
    description: str
    url: str
    parameters: JsonSchema = EMPTY_SCHEMA
    timeout_s: float = 5.0
    interruptible: bool = True
    """A barge-in cancels the call; if False it finishes (within its timeout) and
    its result still enters the history."""


@attrs.frozen
class PythonTool:
    """A tool answered by an ``async`` (trio) function, named ``module:function``."""

    name: str
    description: str
    target: str
    parameters: JsonSchema | None = None
    """None: derived from the function's signature and annotations."""
    timeout_s: float = 5.0
    interruptible: bool = True


BuiltinName = Literal["end_call", "transfer_call", "send_dtmf"]
MachinePolicy = Literal["hangup", "leave_message", "continue"]


@attrs.frozen
class BuiltinTool:
    """A call-control tool Vantum implements itself (enabled per agent)."""

    name: BuiltinName
    description: str = ""
    """Empty: the built-in's own description is used."""


@attrs.frozen
class McpServer:
    """A Model Context Protocol server whose tools the agent may call.

    Exactly one of ``command`` (stdio transport) and ``url`` (streamable HTTP) is set.
    """

    name: str
    command: tuple[str, ...] = ()
    url: str | None = None
    allowed_tools: tuple[str, ...] | None = None
    """None: every tool the server lists."""
    timeout_s: float = 10.0
    interruptible: bool = True


ToolSpec = HttpTool | PythonTool | BuiltinTool


@attrs.frozen
class AgentSpec:
    """One agent: who the bot is and what it may do."""

    name: str
    instructions: str
    """System prompt; ``{variable}`` placeholders are filled per call."""
    greeting: str | None = None
    """Spoken first, straight to TTS, when the call starts; None: the caller speaks first."""
    greeting_interruptible: bool = True
    voice: str | None = None
    language: str | None = None
    """None: the caller's (``audio.input.start``) or the server default."""
    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    variables: Mapping[str, str] = attrs.field(factory=dict)
    """Defaults for ``{variable}`` placeholders; a call may override them."""
    required_variables: tuple[str, ...] = ()
    """Placeholders with no default that every call must supply (token claims or the
    resolver); a call without one is refused. Any other unknown placeholder is a
    start-up error, so a typo cannot become a silent blank."""
    turn: Mapping[str, Any] = attrs.field(factory=dict)
    """Overrides of the call's turn policy (``TurnPolicy`` field names: idle prompts,
    goodbye, barge-in guards), validated by the loader."""
    tools: tuple[ToolSpec, ...] = ()
    mcp_servers: tuple[McpServer, ...] = ()
    max_tool_rounds: int = 3
    """LLM calls after tool results within one answer, at most."""
    filler: str = "One moment, let me check."
    filler_after_ms: int = 800
    """A tool that has not answered by then makes the agent say ``filler`` (once per round)."""
    transfer_numbers: tuple[str, ...] = ()
    """The only numbers ``transfer_call`` may dial (E.164)."""
    end_call_goodbye: str = "Goodbye!"
    webhook_urls: tuple[str, ...] = ()
    """Where this agent's call events go instead of ``VANTUM_WEBHOOK_URL`` (issue 16)."""
    record_audio: bool = False
    """Keep a stereo WAV of each call (docs/integration.md)."""
    on_machine: MachinePolicy = "continue"
    """What an outbound call does when Twilio's answering-machine detection says a
    machine answered: hang up, leave ``machine_message`` after the beep and hang up,
    or carry on as with a person (docs/telephony.md)."""
    machine_message: str | None = None
    """Spoken (after the voicemail's beep) when ``on_machine = "leave_message"``."""
    amd_wait_ms: int = 30_000
    """The greeting of an outbound call with AMD waits this long for the verdict (a
    person's comes within seconds; a machine's after its greeting ends)."""

    def tool_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.tools)


__all__ = [
    "EMPTY_SCHEMA",
    "AgentSpec",
    "BuiltinName",
    "BuiltinTool",
    "HttpTool",
    "JsonSchema",
    "MachinePolicy",
    "McpServer",
    "PythonTool",
    "ToolSpec",
]
