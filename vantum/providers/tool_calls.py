"""Sans-I/O assembly of streamed tool calls (OpenAI chat completions).

A model that calls a function streams it in pieces, inside ``delta.tool_calls``:
the first piece of each call carries its ``index``, ``id``, ``type`` and
``function.name`` (with empty ``arguments``), the following pieces carry only the
``index`` and the next fragment of ``function.arguments`` — a JSON text cut at
arbitrary places, several calls interleaved by index when the model calls more
than one. The stream then ends with ``finish_reason: "tool_calls"``.

:class:`ToolCallAccumulator` joins the fragments by index; nothing is parsed
until the stream is over, because a fragment is not JSON on its own.
"""

from __future__ import annotations

from typing import Any

import attrs

from .base import ToolCall


class MalformedToolCall(ValueError):
    """A ``tool_calls`` delta not shaped like one (a ValueError, as any malformed chunk)."""


@attrs.define
class _Partial:
    id: str = ""
    name: list[str] = attrs.Factory(list)
    arguments: list[str] = attrs.Factory(list)


class ToolCallAccumulator:
    """``tool_calls`` deltas in, complete :class:`ToolCall` values out (by index)."""

    def __init__(self) -> None:
        self._calls: dict[int, _Partial] = {}

    def __bool__(self) -> bool:
        return bool(self._calls)

    def feed(self, deltas: Any) -> None:
        """Take one chunk's ``delta.tool_calls`` list."""
        if not isinstance(deltas, list):
            raise MalformedToolCall(f"tool_calls is not a list: {deltas!r:.200}")
        for delta in deltas:
            if not isinstance(delta, dict):
                raise MalformedToolCall(f"tool call delta is not an object: {delta!r:.200}")
            index = delta.get("index")
            if type(index) is not int or index < 0:
                raise MalformedToolCall(f"tool call delta without an index: {delta!r:.200}")
            partial = self._calls.get(index)
            if partial is None:
                partial = self._calls[index] = _Partial()
            call_id = delta.get("id")
            if isinstance(call_id, str) and call_id and not partial.id:
                partial.id = call_id
            function = delta.get("function")
            if function is None:
                continue
            if not isinstance(function, dict):
                raise MalformedToolCall(f"tool call function is not an object: {delta!r:.200}")
            name = function.get("name")
            if isinstance(name, str) and name:
                partial.name.append(name)
            arguments = function.get("arguments")
            if isinstance(arguments, str) and arguments:
                partial.arguments.append(arguments)
            elif arguments is not None and not isinstance(arguments, str):
                raise MalformedToolCall(f"tool call arguments are not text: {delta!r:.200}")

    def calls(self) -> tuple[ToolCall, ...]:
        """The calls so far, in index order (complete once the stream has ended).

        A call the server gave no id gets ``call_<index>``: the id only has to tie
        the result message to its call.
        """
        out = []
        for index in sorted(self._calls):
            partial = self._calls[index]
            name = "".join(partial.name)
            if not name:
                raise MalformedToolCall(f"tool call #{index} has no function name")
            out.append(ToolCall(partial.id or f"call_{index}", name, "".join(partial.arguments)))
        return tuple(out)


__all__ = ["MalformedToolCall", "ToolCallAccumulator"]
