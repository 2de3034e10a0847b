"""One agent's tools, ready to run: schemas for the model, one runner per name.

:meth:`ToolBox.run` is the only way a tool call runs, and it never raises for the
tool's sake: an unknown name, arguments that are not a JSON object, a timeout, a
:class:`~.base.ToolFailure` or any exception from user code all become a failed
:class:`~.base.ToolResult` whose text the model reads and can talk about.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence

import attrs
import httpx
import trio

from ..agent_spec import AgentSpec, BuiltinTool, HttpTool, PythonTool
from ..errors import ConfigError
from ..providers.base import ToolCall, ToolSchema
from .base import ToolContext, ToolFailure, ToolResult, ToolRunner, failed
from .builtins import BuiltinRunner, implemented
from .http_tool import HttpRunner
from .python_tool import PythonRunner

log = logging.getLogger("vantum.tools")


@attrs.frozen
class ToolBox:
    runners: Mapping[str, ToolRunner]
    schemas: tuple[ToolSchema, ...]

    @classmethod
    def for_agent(
        cls,
        agent: AgentSpec,
        secret: bytes,
        client: httpx.AsyncClient | None = None,
        extra: Sequence[ToolRunner] = (),
    ) -> ToolBox:
        """Every tool of ``agent`` and the ``extra`` ones (its MCP servers' tools);
        raises :class:`ConfigError` for one that cannot run (a Python target that does
        not import, an unknown built-in, a duplicate name)."""
        runners: dict[str, ToolRunner] = {}
        for spec in agent.tools:
            runner: ToolRunner
            if isinstance(spec, HttpTool):
                runner = HttpRunner(spec, secret, client)
            elif isinstance(spec, PythonTool):
                runner = PythonRunner.load(spec)
            elif isinstance(spec, BuiltinTool):
                if not implemented(spec.name):
                    raise ConfigError(
                        f"agent {agent.name}: built-in {spec.name!r} is not implemented"
                    )
                runner = BuiltinRunner(spec, agent.transfer_numbers)
            else:  # pragma: no cover - the union is exhausted above
                raise ConfigError(f"agent {agent.name}: unknown tool kind {spec!r}")
            if spec.name in runners:
                raise ConfigError(f"agent {agent.name}: two tools named {spec.name!r}")
            runners[spec.name] = runner
        for runner in extra:
            name = runner.schema.name
            if name in runners:
                raise ConfigError(f"agent {agent.name}: two tools named {name!r} (one from MCP)")
            runners[name] = runner
        return cls(runners, tuple(r.schema for r in runners.values()))

    def __bool__(self) -> bool:
        return bool(self.runners)

    def interruptible(self, name: str) -> bool:
        runner = self.runners.get(name)
        return True if runner is None else runner.interruptible

    async def run(self, call: ToolCall, ctx: ToolContext) -> ToolResult:
        runner = self.runners.get(call.name)
        if runner is None:
            return failed(f"there is no tool named {call.name!r}")
        try:
            arguments = json.loads(call.arguments) if call.arguments.strip() else {}
        except ValueError:
            return failed(f"the arguments for {call.name} were not valid JSON")
        if not isinstance(arguments, dict):
            return failed(f"the arguments for {call.name} must be a JSON object")
        with trio.move_on_after(runner.timeout_s):
            try:
                return await runner.run(call.id, arguments, ctx)
            except ToolFailure as exc:
                return failed(str(exc))
            except TypeError as exc:  # the model's arguments do not fit the function
                return failed(f"{call.name} was called with wrong arguments: {exc}")
            except Exception as exc:  # user code: the call must survive it
                log.exception("tool %s failed", call.name)
                return failed(f"the {call.name} tool failed ({type(exc).__name__})")
        return failed(f"{call.name} did not answer within {runner.timeout_s:g} seconds")


NO_TOOLBOX = ToolBox({}, ())

__all__ = ["NO_TOOLBOX", "ToolBox"]
