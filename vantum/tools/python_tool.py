"""Python tools: an ``async`` (trio) function named ``module:function`` answers the call.

The function receives the model's arguments as keyword arguments and, if its first
parameter is annotated :class:`~.base.ToolContext` (or named ``ctx``), the call's
context (call id, variables, ``say``). Its return value (JSON-able) is the result;
raising :class:`~.base.ToolFailure` fails the call with that message, any other
exception fails it with the exception's type (the traceback goes to the log, not
to the model).

When the agent gives no ``parameters`` the JSON schema is derived from the
signature: ``str``/``int``/``float``/``bool``/``list``/``dict`` annotations (and
``X | None``), required unless the parameter has a default.
"""

from __future__ import annotations

import importlib
import inspect
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs

from ..agent_spec import PythonTool
from ..errors import ConfigError
from ..providers.base import ToolSchema
from .base import ToolContext, ToolResult

ToolFunction = Callable[..., Awaitable[Any]]

_JSON_TYPES: dict[Any, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    list: "array",
    dict: "object",
}


def load_function(target: str) -> ToolFunction:
    """Import ``module:function``; a clear :class:`ConfigError` when it is not there."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise ConfigError(f"python tool target {target!r} should be 'module:function'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"python tool {target!r}: cannot import {module_name}: {exc}") from exc
    function = getattr(module, attr, None)
    if function is None:
        raise ConfigError(f"python tool {target!r}: {module_name} has no {attr}")
    if not inspect.iscoroutinefunction(function):
        raise ConfigError(f"python tool {target!r} must be an async function")
    return typing.cast(ToolFunction, function)


def _wants_context(function: ToolFunction) -> bool:
    params = list(inspect.signature(function).parameters.values())
    if not params:
        return False
    hints = typing.get_type_hints(function)
    return hints.get(params[0].name) is ToolContext or params[0].name == "ctx"


def _json_type(annotation: Any) -> dict[str, Any]:
    origin = typing.get_origin(annotation)
    if origin in (types.UnionType, typing.Union):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _json_type(rest[0]) if len(rest) == 1 else {}
    if origin is typing.Literal:
        return {"enum": list(typing.get_args(annotation))}
    base = origin or annotation
    kind = _JSON_TYPES.get(base)
    return {"type": kind} if kind else {}


def derive_schema(function: ToolFunction) -> dict[str, Any]:
    """The JSON schema of ``function``'s keyword arguments (the context excluded)."""
    hints = typing.get_type_hints(function)
    params = list(inspect.signature(function).parameters.values())
    if _wants_context(function):
        params = params[1:]
    properties: dict[str, Any] = {}
    required: list[str] = []
    for p in params:
        if p.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            continue
        properties[p.name] = _json_type(hints.get(p.name, Any))
        if p.default is inspect.Parameter.empty:
            required.append(p.name)
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return schema


@attrs.frozen
class PythonRunner:
    spec: PythonTool
    function: ToolFunction
    parameters: Mapping[str, Any]
    with_context: bool

    @classmethod
    def load(cls, spec: PythonTool) -> PythonRunner:
        function = load_function(spec.target)
        parameters = spec.parameters if spec.parameters is not None else derive_schema(function)
        return cls(spec, function, parameters, _wants_context(function))

    @property
    def schema(self) -> ToolSchema:
        description = self.spec.description or inspect.getdoc(self.function) or ""
        return ToolSchema(self.spec.name, description, self.parameters)

    @property
    def timeout_s(self) -> float:
        return self.spec.timeout_s

    @property
    def interruptible(self) -> bool:
        return self.spec.interruptible

    async def run(self, call_id: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if self.with_context:
            value = await self.function(ctx, **arguments)
        else:
            value = await self.function(**arguments)
        return ToolResult(True, value)


__all__ = ["PythonRunner", "ToolFunction", "derive_schema", "load_function"]
