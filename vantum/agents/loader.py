"""Read an agents file (TOML) into :class:`~.spec.AgentSpec` values, once, at start-up.

Everything that can be checked without placing a call is checked here, so a bad
file stops ``vantum serve`` with ``FILE:LINE: agents.NAME.KEY: what is wrong``
instead of failing a caller later: unknown keys (typos), types and ranges, tool
kinds, URLs, ``module:function`` targets (imported now), transfer numbers, and
every ``{placeholder}`` of the instructions and greeting (it must have a default, be
a built-in call variable, or be listed in ``required_variables``).

``tomllib`` reports syntax errors with their line but keeps no positions for
values, so a semantic error's line is found by scanning the text: the line of the
key inside its table when it can be found, else the table's header line.
docs/agents.md documents the schema.
"""

from __future__ import annotations

import importlib
import inspect
import re
import shlex
import sys
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar, cast, get_args

import attrs

from ..agent_spec import (
    AgentSpec,
    BuiltinTool,
    HttpTool,
    MachinePolicy,
    McpServer,
    PythonTool,
    ToolSpec,
)
from ..errors import ConfigError
from ..pipeline.settings import TurnPolicy
from .template import TemplateError, placeholders

NAME_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""Agent and tool names: what OpenAI accepts for a function name, and safe in a URL."""
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
TARGET_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")
BUILTIN_VARIABLES = ("caller", "called", "call_id", "transport")
"""Filled for every call (docs/agents.md): the caller's number or token subject, the
number called, the call's id, and ``browser``/``voicechat``/``twilio``."""
BUILTINS = ("end_call", "transfer_call", "send_dtmf")

_AGENT_KEYS = {
    "on_machine",
    "machine_message",
    "amd_wait_ms",
    "instructions",
    "greeting",
    "greeting_interruptible",
    "voice",
    "language",
    "model",
    "temperature",
    "max_tokens",
    "variables",
    "required_variables",
    "turn",
    "tools",
    "mcp",
    "max_tool_rounds",
    "filler",
    "filler_after_ms",
    "transfer_numbers",
    "end_call_goodbye",
    "webhook_urls",
    "record_audio",
}
_TOOL_KEYS = {
    "name",
    "description",
    "url",
    "python",
    "builtin",
    "parameters",
    "timeout_s",
    "interruptible",
}
_MCP_KEYS = {"name", "command", "url", "allowed_tools", "timeout_s", "interruptible"}
_TURN_KEYS = {f.name for f in attrs.fields(TurnPolicy)}


_FILLER: str = str(attrs.fields(AgentSpec).filler.default)


class AgentsFileError(ConfigError):
    """The agents file cannot be used; the message names file, line and problem."""


@attrs.frozen
class AgentBook:
    """The agents a server can run, and the one a call gets when it names none."""

    agents: Mapping[str, AgentSpec]
    default: str
    source: str | None = None
    """The file they came from (None: built from the server's own settings)."""

    @property
    def default_agent(self) -> AgentSpec:
        return self.agents[self.default]

    def get(self, name: str) -> AgentSpec | None:
        return self.agents.get(name)

    def with_default(self, name: str | None) -> AgentBook:
        """The same agents with ``name`` as the default (``--default-agent``)."""
        if name is None or name == self.default:
            return self
        if name not in self.agents:
            known = ", ".join(sorted(self.agents))
            where = self.source or "the server"
            raise AgentsFileError(f"default agent {name!r} is not defined in {where} ({known})")
        return attrs.evolve(self, default=name)


def load_agents(path: str | Path, default: str | None = None) -> AgentBook:
    """Parse and check the agents file at ``path``; raise :class:`AgentsFileError`."""
    file = Path(path).expanduser()
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AgentsFileError(f"{file}: cannot read the agents file: {exc}") from None
    # Python tools live next to the agents file (docs/agents.md).
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.append(folder)
    return parse_agents(text, str(file), default)


def parse_agents(text: str, filename: str = "<agents>", default: str | None = None) -> AgentBook:
    """Parse agents-file ``text``; ``filename`` is used in error messages only."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise AgentsFileError(f"{filename}: not valid TOML: {exc}") from None
    return _Parser(text, filename).book(data, default)


class _Parser:
    def __init__(self, text: str, filename: str) -> None:
        self.lines = text.splitlines()
        self.filename = filename

    # --- locating ------------------------------------------------------------------

    def _header(self, path: Sequence[str], array: bool = False, nth: int = 0) -> int | None:
        """1-based line of ``[a.b]`` (``[[a.b]]`` when ``array``; its ``nth`` entry)."""
        parts = r"\s*\.\s*".join(rf"[\"']?{re.escape(p)}[\"']?" for p in path)
        pattern = re.compile(
            (r"^\s*\[\[\s*" + parts + r"\s*\]\]") if array else (r"^\s*\[\s*" + parts + r"\s*\]")
        )
        seen = 0
        for i, line in enumerate(self.lines):
            if pattern.match(line) and not (not array and line.lstrip().startswith("[[")):
                if seen == nth:
                    return i + 1
                seen += 1
        return None

    def _key(self, start: int | None, key: str) -> int | None:
        """Line of ``key = ...`` in the table whose header is on line ``start``."""
        if start is None:
            return None
        pattern = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for i in range(start, len(self.lines)):
            line = self.lines[i]
            if line.lstrip().startswith("["):
                break
            if pattern.match(line):
                return i + 1
        return None

    def fail(self, where: str, line: int | None, message: str) -> AgentsFileError:
        at = f"{self.filename}:{line}" if line else self.filename
        return AgentsFileError(f"{at}: {where}: {message}")

    # --- the file ------------------------------------------------------------------

    def book(self, data: Mapping[str, Any], default: str | None) -> AgentBook:
        unknown = set(data) - {"agents", "default"}
        if unknown:
            key = sorted(unknown)[0]
            raise self.fail(key, self._key(0, key), "unknown top-level key (use [agents.NAME])")
        agents_table = data.get("agents")
        if not isinstance(agents_table, dict) or not agents_table:
            raise self.fail("agents", None, "no agents defined: add an [agents.NAME] table")
        agents: dict[str, AgentSpec] = {}
        for name, table in agents_table.items():
            agents[name] = self.agent(name, table)
        file_default = data.get("default")
        if file_default is not None and not isinstance(file_default, str):
            raise self.fail("default", self._key(0, "default"), "must be an agent name (string)")
        chosen = default or file_default or next(iter(agents))
        if chosen not in agents:
            line = None if default else self._key(0, "default")
            known = ", ".join(sorted(agents))
            raise self.fail("default", line, f"agent {chosen!r} is not defined ({known})")
        return AgentBook(agents, chosen, self.filename)

    def agent(self, name: str, table: Any) -> AgentSpec:
        where = f"agents.{name}"
        header = self._header(("agents", name))
        if not NAME_RE.fullmatch(name):
            raise self.fail(where, header, "agent names are 1-64 of A-Z a-z 0-9 _ -")
        if not isinstance(table, dict):
            raise self.fail(where, header, "must be a table ([agents.NAME])")
        at = _Table(self, where, header, table)
        at.no_unknown(_AGENT_KEYS)
        instructions = at.string("instructions", required=True)
        assert instructions is not None
        greeting = at.string("greeting")
        variables = at.string_map("variables")
        required = at.names("required_variables")
        for key in ("instructions", "greeting"):
            value = table.get(key)
            if value is None:
                continue
            try:
                used = placeholders(value)
            except TemplateError as exc:
                raise at.fail(key, str(exc)) from None
            known = set(variables) | set(required) | set(BUILTIN_VARIABLES)
            for var in used:
                if var not in known:
                    raise at.fail(
                        key,
                        f"unknown variable {{{var}}}: give it a default in `variables`, "
                        "list it in `required_variables` (supplied per call), or use a "
                        f"built-in ({', '.join(BUILTIN_VARIABLES)})",
                    )
        temperature = at.number("temperature", 0.0, 2.0)
        spec = AgentSpec(
            name=name,
            instructions=instructions,
            greeting=greeting,
            greeting_interruptible=at.boolean("greeting_interruptible", True),
            voice=at.string("voice"),
            language=at.language("language"),
            model=at.string("model"),
            temperature=temperature,
            max_tokens=at.integer("max_tokens", 1, 100_000),
            variables=variables,
            required_variables=required,
            turn=self.turn(where, table.get("turn")),
            tools=self.tools(name, table.get("tools")),
            mcp_servers=self.mcp(name, table.get("mcp")),
            max_tool_rounds=_or(at.integer("max_tool_rounds", 0, 20), 3),
            filler=at.string("filler") or _FILLER,
            filler_after_ms=_or(at.integer("filler_after_ms", 0, 60_000), 800),
            transfer_numbers=at.numbers("transfer_numbers"),
            end_call_goodbye=at.string("end_call_goodbye") or "Goodbye!",
            webhook_urls=at.urls("webhook_urls"),
            record_audio=at.boolean("record_audio", False),
            on_machine=self.machine_policy(at),
            machine_message=at.string("machine_message"),
            amd_wait_ms=_or(at.integer("amd_wait_ms", 0, 59_000), 30_000),
        )
        if spec.on_machine == "leave_message" and not spec.machine_message:
            raise at.fail("on_machine", '"leave_message" needs a `machine_message` to leave')
        names = spec.tool_names()
        for tool in spec.tools:
            if names.count(tool.name) > 1:
                raise at.fail("tools", f"two tools are named {tool.name!r}")
            if (
                isinstance(tool, BuiltinTool)
                and tool.name == "transfer_call"
                and not spec.transfer_numbers
            ):
                raise at.fail(
                    "tools",
                    "transfer_call needs `transfer_numbers` (the E.164 numbers it may dial)",
                )
        return spec

    def machine_policy(self, at: _Table) -> MachinePolicy:
        value = at.string("on_machine") or "continue"
        for policy in get_args(MachinePolicy):
            if value == policy:
                return cast(MachinePolicy, policy)
        raise at.fail("on_machine", 'must be "hangup", "leave_message" or "continue"')

    def turn(self, where: str, table: Any) -> Mapping[str, Any]:
        if table is None:
            return {}
        header = self._header(("agents", where.split(".", 1)[1], "turn"))
        at = _Table(self, f"{where}.turn", header, table if isinstance(table, dict) else {})
        if not isinstance(table, dict):
            raise at.fail("", "must be a table ([agents.NAME.turn])")
        at.no_unknown(_TURN_KEYS)
        out: dict[str, Any] = {}
        for key, value in table.items():
            default = getattr(attrs.fields(TurnPolicy), key).default
            if key == "idle_prompt_s":
                if value is False or value == 0:
                    out[key] = None  # idle prompts off
                    continue
                ok = isinstance(value, int | float) and not isinstance(value, bool) and value > 0
                if not ok:
                    raise at.fail(key, "must be seconds > 0, or false to turn idle prompts off")
                out[key] = float(value)
            elif key == "idle_prompts":
                if (
                    not isinstance(value, list)
                    or not value
                    or not all(isinstance(v, str) and v for v in value)
                ):
                    raise at.fail(key, "must be a non-empty list of strings")
                out[key] = tuple(value)
            elif key == "silence_ms":  # None by default: the caller's silenceMs
                out[key] = at.integer(key, 100, 5000)
            elif isinstance(default, bool):
                out[key] = at.boolean(key, default)
            elif isinstance(default, float):  # probabilities (VAD, end-of-turn model)
                out[key] = at.number(key, 0.0, 1.0)
            elif isinstance(default, int):
                out[key] = at.integer(key, 0, 1_000_000)
            elif isinstance(default, str):
                out[key] = at.string(key)
        return out

    def tools(self, agent: str, entries: Any) -> tuple[ToolSpec, ...]:
        if entries is None:
            return ()
        where = f"agents.{agent}.tools"
        if not isinstance(entries, list):
            raise self.fail(
                where,
                self._key(self._header(("agents", agent)), "tools"),
                "must be an array of tables ([[agents.NAME.tools]])",
            )
        return tuple(self.tool(agent, i, entry) for i, entry in enumerate(entries))

    def tool(self, agent: str, i: int, entry: Any) -> ToolSpec:
        where = f"agents.{agent}.tools[{i}]"
        header = self._header(("agents", agent, "tools"), array=True, nth=i)
        if not isinstance(entry, dict):
            raise self.fail(where, header, "must be a table")
        at = _Table(self, where, header, entry)
        at.no_unknown(_TOOL_KEYS)
        kinds = [k for k in ("url", "python", "builtin") if k in entry]
        if len(kinds) != 1:
            raise at.fail(
                "",
                "a tool needs exactly one of `url` (HTTP), `python` (module:function) "
                f"or `builtin` ({', '.join(BUILTINS)}); found {kinds or 'none'}",
            )
        kind = kinds[0]
        if kind == "builtin":
            builtin = at.string("builtin")
            if builtin not in BUILTINS:
                raise at.fail(
                    "builtin", f"unknown built-in {builtin!r} (use {', '.join(BUILTINS)})"
                )
            extra = set(entry) - {"builtin", "name", "description"}
            if extra:
                raise at.fail(sorted(extra)[0], "not a setting of a built-in tool")
            if (at.string("name") or builtin) != builtin:
                raise at.fail("name", f"a built-in is named after itself ({builtin!r})")
            return BuiltinTool(builtin, at.string("description") or "")  # type: ignore[arg-type]
        name = at.string("name", required=True)
        assert name is not None
        if not NAME_RE.fullmatch(name):
            raise at.fail("name", "tool names are 1-64 of A-Z a-z 0-9 _ -")
        description = at.string("description", required=True)
        assert description is not None
        parameters = at.schema("parameters")
        timeout = _or(at.number("timeout_s", 0.001, 600.0), 5.0)
        interruptible = at.boolean("interruptible", True)
        if kind == "url":
            url = at.string("url")
            assert url is not None
            if not re.match(r"https?://[^/\s]+", url):
                raise at.fail("url", f"{url!r} is not an http:// or https:// URL")
            return HttpTool(
                name,
                description,
                url,
                parameters or {"type": "object", "properties": {}},
                timeout,
                interruptible,
            )
        target = at.string("python")
        assert target is not None
        if not TARGET_RE.fullmatch(target):
            raise at.fail("python", f"{target!r} is not module:function (e.g. my_tools:lookup)")
        module_name, func_name = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except Exception as exc:
            raise at.fail("python", f"cannot import {module_name!r}: {exc}") from None
        func = getattr(module, func_name, None)
        if func is None or not inspect.iscoroutinefunction(func):
            raise at.fail("python", f"{target!r} must name an `async def` function")
        return PythonTool(name, description, target, parameters, timeout, interruptible)

    def mcp(self, agent: str, entries: Any) -> tuple[McpServer, ...]:
        if entries is None:
            return ()
        if not isinstance(entries, list):
            raise self.fail(
                f"agents.{agent}.mcp",
                self._header(("agents", agent)),
                "must be an array of tables ([[agents.NAME.mcp]])",
            )
        servers: list[McpServer] = []
        for i, entry in enumerate(entries):
            where = f"agents.{agent}.mcp[{i}]"
            header = self._header(("agents", agent, "mcp"), array=True, nth=i)
            if not isinstance(entry, dict):
                raise self.fail(where, header, "must be a table")
            at = _Table(self, where, header, entry)
            at.no_unknown(_MCP_KEYS)
            name = at.string("name", required=True)
            assert name is not None
            command_value = entry.get("command")
            command: tuple[str, ...] = ()
            if isinstance(command_value, str):
                command = tuple(shlex.split(command_value))
            elif isinstance(command_value, list) and all(isinstance(c, str) for c in command_value):
                command = tuple(command_value)
            elif command_value is not None:
                raise at.fail("command", "must be a string or a list of strings")
            url = at.string("url")
            if bool(command) == bool(url):
                raise at.fail("", "an MCP server needs exactly one of `command` (stdio) or `url`")
            if url is not None and not re.match(r"https?://[^/\s]+", url):
                raise at.fail("url", f"{url!r} is not an http:// or https:// URL")
            allowed = entry.get("allowed_tools")
            if allowed is not None and not (
                isinstance(allowed, list) and all(isinstance(a, str) for a in allowed)
            ):
                raise at.fail("allowed_tools", "must be a list of tool names")
            servers.append(
                McpServer(
                    name,
                    command,
                    url,
                    tuple(allowed) if allowed is not None else None,
                    _or(at.number("timeout_s", 0.001, 600.0), 10.0),
                    at.boolean("interruptible", True),
                )
            )
        return tuple(servers)


@attrs.frozen
class _Table:
    """Typed reads of one TOML table, each failing with the key's line."""

    parser: _Parser
    where: str
    header: int | None
    table: Mapping[str, Any]

    def fail(self, key: str, message: str) -> AgentsFileError:
        line = (self.parser._key(self.header, key) if key else None) or self.header
        return self.parser.fail(f"{self.where}.{key}" if key else self.where, line, message)

    def no_unknown(self, allowed: set[str]) -> None:
        for key in self.table:
            if key not in allowed:
                raise self.fail(key, f"unknown key (allowed: {', '.join(sorted(allowed))})")

    def string(self, key: str, *, required: bool = False) -> str | None:
        value = self.table.get(key)
        if value is None:
            if required:
                raise self.fail(key, "is required")
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.fail(key, "must be a non-empty string")
        return value

    def language(self, key: str) -> str | None:
        value = self.string(key)
        if value is not None and not 2 <= len(value) <= 16:
            raise self.fail(key, "must be a language tag like 'en-US'")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.table.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, "must be true or false")
        return value

    def integer(self, key: str, low: int, high: int) -> int | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.fail(key, f"must be a whole number within {low}..{high}")
        return value

    def number(self, key: str, low: float, high: float) -> float | None:
        value = self.table.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.fail(key, f"must be a number within {low:g}..{high:g}")
        if not low <= value <= high:
            raise self.fail(key, f"must be a number within {low:g}..{high:g}")
        return float(value)

    def string_map(self, key: str) -> dict[str, str]:
        value = self.table.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(key, 'must be a table of name = "text"')
        for k, v in value.items():
            if not k.isidentifier():
                raise self.fail(key, f"variable name {k!r} is not a plain name")
            if not isinstance(v, str):
                raise self.fail(key, f"variable {k!r} must be a string")
        return dict(value)

    def names(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(
            isinstance(v, str) and v.isidentifier() for v in value
        ):
            raise self.fail(key, "must be a list of plain names")
        return tuple(value)

    def numbers(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, 'must be a list of E.164 numbers ("+15551234567")')
        for v in value:
            if not E164_RE.fullmatch(v):
                raise self.fail(key, f'{v!r} is not an E.164 number ("+15551234567")')
        return tuple(value)

    def urls(self, key: str) -> tuple[str, ...]:
        value = self.table.get(key)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, 'must be a list of URLs ("https://...")')
        for v in value:
            if not v.startswith(("http://", "https://")):
                raise self.fail(key, f"{v!r} is not an http(s) URL")
        return tuple(value)

    def schema(self, key: str) -> Mapping[str, Any] | None:
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, dict) or value.get("type") != "object":
            raise self.fail(key, 'must be a JSON Schema object: { type = "object", ... }')
        props = value.get("properties", {})
        if not isinstance(props, dict):
            raise self.fail(key, "`properties` must be a table")
        required = value.get("required", [])
        if not isinstance(required, list) or any(r not in props for r in required):
            raise self.fail(key, "`required` must list names from `properties`")
        return value


_T = TypeVar("_T")


def _or(value: _T | None, default: _T) -> _T:
    return default if value is None else value


__all__ = ["BUILTIN_VARIABLES", "AgentBook", "AgentsFileError", "load_agents", "parse_agents"]
