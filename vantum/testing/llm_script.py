"""The fake OpenAI's script: which user message gets which tool calls.

``vantum fakes --llm-script FILE`` reads a JSON list of steps::

    [{"when": "booking",                       # substring of the last user message
      "say": "Let me look.",                   # optional: text before the calls
      "tool_calls": [{"name": "lookup_booking", "arguments": {"surname": "Smith"}}],
      "then": "Your room is booked for Friday."}]   # the answer after the results

The first step whose ``when`` occurs in the last user message (case-insensitive)
answers it: with its tool calls when the request offered those tools, and with
``then`` once the request carries the calls' results. A step without tool calls
just answers ``then``. Anything no step matches gets the fake's default answer.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs


class ScriptError(ValueError):
    """The script file is not what the format above says."""


@attrs.frozen
class ScriptedCall:
    name: str
    arguments: Mapping[str, Any]


@attrs.frozen
class ScriptStep:
    when: str
    tool_calls: tuple[ScriptedCall, ...] = ()
    then: str = ""
    say: str = ""


def parse_llm_script(data: Any, source: str = "script") -> tuple[ScriptStep, ...]:
    """Validate the decoded JSON; errors name the step and the field."""
    if not isinstance(data, list):
        raise ScriptError(f"{source}: the script must be a JSON list of steps")
    steps = []
    for i, raw in enumerate(data):
        where = f"{source}: step {i}"
        if not isinstance(raw, dict):
            raise ScriptError(f"{where} is not an object")
        unknown = set(raw) - {"when", "tool_calls", "then", "say"}
        if unknown:
            raise ScriptError(f"{where}: unknown keys {sorted(unknown)}")
        when = raw.get("when")
        if not isinstance(when, str) or not when:
            raise ScriptError(f"{where}: 'when' must be a non-empty string")
        then, say = raw.get("then", ""), raw.get("say", "")
        if not isinstance(then, str) or not isinstance(say, str):
            raise ScriptError(f"{where}: 'then' and 'say' must be strings")
        calls = raw.get("tool_calls", [])
        if not isinstance(calls, list):
            raise ScriptError(f"{where}: 'tool_calls' must be a list")
        parsed = []
        for j, call in enumerate(calls):
            if not isinstance(call, dict) or not isinstance(call.get("name"), str):
                raise ScriptError(f"{where}: tool_calls[{j}] needs a 'name' string")
            arguments = call.get("arguments", {})
            if not isinstance(arguments, dict):
                raise ScriptError(f"{where}: tool_calls[{j}].arguments must be an object")
            parsed.append(ScriptedCall(call["name"], arguments))
        if not parsed and not then:
            raise ScriptError(f"{where}: needs 'tool_calls' or 'then'")
        steps.append(ScriptStep(when, tuple(parsed), then, say))
    return tuple(steps)


def load_llm_script(path: str | Path) -> tuple[ScriptStep, ...]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScriptError(f"{path}: {exc}") from exc
    return parse_llm_script(data, str(path))


def match_step(steps: Sequence[ScriptStep], user_text: str) -> ScriptStep | None:
    said = user_text.lower()
    for step in steps:
        if step.when.lower() in said:
            return step
    return None


__all__ = [
    "ScriptError",
    "ScriptStep",
    "ScriptedCall",
    "load_llm_script",
    "match_step",
    "parse_llm_script",
]
