"""Which agent a call runs, with which variables: pure decisions, no I/O.

A call names an agent in up to three places, weakest first: the URL (``/ws?agent=``,
the Twilio voice webhook's ``agent=``), the signed token's claims, and the resolver
webhook's answer. The token is signed by the user's backend, so when it names an
agent an unsigned ``?agent=`` may not contradict it. Variables and overrides
(instructions, greeting, voice, language) come only from signed sources (token
claims, the resolver), never from the URL. docs/agents.md has the rules.

:func:`call_settings` turns the chosen agent into the call's
:class:`~vantum.pipeline.settings.CallSettings` (templates filled); a template
that cannot be filled refuses the call (:class:`AgentRefused`) rather than
speaking a blank.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from ..agent_spec import AgentSpec
from ..errors import VantumError
from ..pipeline.settings import CallSettings
from .loader import AgentBook
from .template import TemplateError, render

MAX_VARIABLES = 32
MAX_VALUE_CHARS = 2000
OVERRIDE_KEYS = ("instructions", "greeting", "voice", "language")


class AgentRefused(VantumError):
    """The call cannot run the agent it asked for; ``reason`` is a stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@attrs.frozen
class CallFacts:
    """What is known about a call before it starts (sent to the resolver)."""

    call_id: str
    transport: str
    caller: str | None = None
    """The caller's number (phone) or the token's subject (browser)."""
    called: str | None = None
    """The number dialled (phone)."""
    requested_agent: str | None = None
    """The agent the URL named (``?agent=``), if any."""
    claims: Mapping[str, Any] | None = None
    """The token's claims, as JSON (browser calls with a token)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "callId": self.call_id,
            "transport": self.transport,
            "from": self.caller,
            "to": self.called,
            "agent": self.requested_agent,
            "claims": dict(self.claims) if self.claims is not None else None,
        }


@attrs.frozen
class AgentChoice:
    """One source's say on the agent: a name, variables and overrides (all optional)."""

    agent: str | None = None
    variables: Mapping[str, str] = attrs.field(factory=dict)
    overrides: Mapping[str, str] = attrs.field(factory=dict)


def parse_choice(obj: Any, source: str) -> AgentChoice:
    """An :class:`AgentChoice` from JSON ``{agent, variables, overrides}``; raises
    ValueError naming ``source`` for anything else."""
    if not isinstance(obj, dict):
        raise ValueError(f"{source}: expected a JSON object")
    agent = obj.get("agent")
    if agent is not None and (not isinstance(agent, str) or not agent):
        raise ValueError(f"{source}: `agent` must be a name or null")
    return AgentChoice(
        agent,
        check_variables(obj.get("variables"), source),
        check_overrides(obj.get("overrides"), source),
    )


def check_variables(value: Any, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_VARIABLES:
        raise ValueError(f"{source}: `variables` must be an object of at most {MAX_VARIABLES}")
    for k, v in value.items():
        if not isinstance(k, str) or not k.isidentifier() or len(k) > 64:
            raise ValueError(f"{source}: variable name {str(k)[:40]!r} is not a plain name")
        if not isinstance(v, str) or len(v) > MAX_VALUE_CHARS:
            raise ValueError(f"{source}: variable {k!r} must be a string of at most 2000")
    return dict(value)


def check_overrides(value: Any, source: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValueError(f"{source}: `overrides` must be an object")
    for k, v in value.items():
        if k not in OVERRIDE_KEYS:
            raise ValueError(
                f"{source}: cannot override {str(k)[:40]!r} ({', '.join(OVERRIDE_KEYS)})"
            )
        if not isinstance(v, str) or not v or len(v) > 20_000:
            raise ValueError(f"{source}: override {k!r} must be a non-empty string")
    return dict(value)


def requested_agent(book: AgentBook, url_agent: str | None, claims: AgentChoice) -> AgentSpec:
    """The agent the URL and the token ask for (the default if neither names one).

    Raises :class:`AgentRefused` for an unknown name, or a URL naming a different
    agent than the token it came with.
    """
    if claims.agent is not None and url_agent is not None and claims.agent != url_agent:
        raise AgentRefused(
            "agent_mismatch",
            f"the token is for agent {claims.agent!r}, not {url_agent!r}",
        )
    name = claims.agent or url_agent
    if name is None:
        return book.default_agent
    agent = book.get(name)
    if agent is None:
        raise AgentRefused("unknown_agent", f"unknown agent {name[:64]!r}")
    return agent


def call_settings(
    base: CallSettings,
    agent: AgentSpec,
    facts: CallFacts,
    *choices: AgentChoice,
) -> CallSettings:
    """``base`` made into ``agent``'s call: instructions, greeting, voice, language and
    turn policy from the agent, variables and overrides from ``choices`` (later ones
    win). Raises :class:`AgentRefused` when a template cannot be filled."""
    variables: dict[str, str] = {
        "caller": facts.caller or "unknown",
        "called": facts.called or "unknown",
        "call_id": facts.call_id,
        "transport": facts.transport,
    }
    variables.update(agent.variables)
    overrides: dict[str, str] = {}
    for choice in choices:
        variables.update(choice.variables)
        overrides.update(choice.overrides)
    try:
        instructions = render(overrides.get("instructions", agent.instructions), variables)
        greeting_template = overrides.get("greeting", agent.greeting)
        greeting = render(greeting_template, variables) if greeting_template else None
    except TemplateError as exc:
        raise AgentRefused("missing_variable", f"agent {agent.name!r}: {exc}") from None
    turn = attrs.evolve(base.turn, **dict(agent.turn)) if agent.turn else base.turn
    # Kept in the call's agent, so a caller's audio.input.start that names no voice or
    # language falls back to these (CallSettings.with_input_start).
    voice = overrides.get("voice") or agent.voice
    language = overrides.get("language") or agent.language
    return attrs.evolve(
        base,
        agent=attrs.evolve(agent, voice=voice, language=language),
        variables=variables,
        system_prompt=instructions,
        greeting=greeting,
        greeting_interruptible=agent.greeting_interruptible,
        voice_id=voice or base.voice_id,
        language=language or base.language,
        turn=turn,
    )


__all__ = [
    "AgentChoice",
    "AgentRefused",
    "CallFacts",
    "call_settings",
    "check_overrides",
    "check_variables",
    "parse_choice",
    "requested_agent",
]
