"""The agents file: parsing, start-up errors with file and line, safe templates,
per-call selection and the greeting decision (pure code, no sockets)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantum.agent_spec import BuiltinTool, HttpTool, McpServer, PythonTool
from vantum.agents.loader import AgentsFileError, load_agents, parse_agents
from vantum.agents.selection import (
    AgentChoice,
    AgentRefused,
    CallFacts,
    call_settings,
    parse_choice,
    requested_agent,
)
from vantum.agents.template import TemplateError, escape, placeholders, render
from vantum.pipeline.messages import InputStarted, TextTurn
from vantum.pipeline.settings import CallSettings
from vantum.pipeline.turn_state import Respond, TurnState
from vantum.protocol.client_events import InputStart
from vantum.server.auth import WS_AUDIENCE, verify_token
from vantum.server.call_tokens import call_token

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

GOOD = """\
default = "concierge"

[agents.concierge]
instructions = "You are the front desk of {hotel}. Caller: {caller}."
greeting = "Hello, {hotel}, how can I help?"
greeting_interruptible = false
voice = "voice-1"
language = "fr-FR"
temperature = 0.4
max_tokens = 300
variables = { hotel = "Hotel Example" }
transfer_numbers = ["+15550001111"]

[agents.concierge.turn]
idle_prompt_s = 8
goodbye = "Bye for now."

[[agents.concierge.tools]]
name = "lookup_booking"
description = "Find a booking by surname"
url = "http://127.0.0.1:9000/tools/lookup_booking"
interruptible = false
[agents.concierge.tools.parameters]
type = "object"
required = ["surname"]
properties.surname.type = "string"

[[agents.concierge.tools]]
builtin = "end_call"

[[agents.concierge.tools]]
builtin = "transfer_call"

[[agents.concierge.mcp]]
name = "files"
command = "python -m my_mcp_server --root /tmp"

[agents.plain]
instructions = "Be brief. {{braces}} stay."
webhook_urls = ["https://hooks.example.com/vantum"]
record_audio = true
"""


def test_a_good_file_parses_into_specs() -> None:
    book = parse_agents(GOOD, "agents.toml")
    assert book.default == "concierge" and set(book.agents) == {"concierge", "plain"}
    a = book.agents["concierge"]
    assert (a.voice, a.language, a.temperature, a.max_tokens) == ("voice-1", "fr-FR", 0.4, 300)
    assert a.greeting_interruptible is False
    assert a.turn == {"idle_prompt_s": 8.0, "goodbye": "Bye for now."}
    http, end, transfer = a.tools
    assert isinstance(http, HttpTool) and http.url.endswith("/lookup_booking")
    assert http.parameters["required"] == ["surname"] and http.interruptible is False
    assert end == BuiltinTool("end_call") and transfer == BuiltinTool("transfer_call")
    assert a.mcp_servers == (
        McpServer("files", ("python", "-m", "my_mcp_server", "--root", "/tmp")),
    )
    assert book.with_default("plain").default == "plain"
    plain = book.agents["plain"]
    assert plain.webhook_urls == ("https://hooks.example.com/vantum",) and plain.record_audio
    assert a.webhook_urls == () and a.record_audio is False


def test_the_shipped_example_file_loads() -> None:
    book = load_agents(EXAMPLES / "agents.toml")
    assert {"booking", "support"} <= set(book.agents)
    assert all(a.greeting for a in book.agents.values())


@pytest.mark.parametrize(
    ("patch", "marker", "words"),
    [
        # (replace this, with that) -> the error is on the line holding `marker`
        (("temperature = 0.4", "temperature = 7"), "temperature = 7", "concierge.temperature"),
        (('voice = "voice-1"', 'vioce = "voice-1"'), "vioce", "unknown key"),
        (("Caller: {caller}", "Caller: {calller}"), "{calller}", "unknown variable {calller}"),
        (("Caller: {caller}", "Caller: {caller.__class__}"), "__class__", "not allowed"),
        (('builtin = "end_call"', 'builtin = "self_destruct"'), "self_destruct", "built-in"),
        (('url = "http://127.0.0.1:9000', 'url = "ftp://127.0.0.1:9000'), "ftp:", "not an http"),
        (('transfer_numbers = ["+15550001111"]', ""), "[agents.concierge]", "transfer_call needs"),
        (('name = "lookup_booking"', 'name = "look up"'), '"look up"', "tool names"),
        (
            ('command = "python', 'url = "http://x"\ncommand = "python'),
            "[[agents.concierge.mcp]]",
            "exactly one",
        ),
        (('goodbye = "Bye for now."', "goodbye = 3"), "goodbye = 3", "concierge.turn.goodbye"),
        (('default = "concierge"', 'default = "nobody"'), "nobody", "'nobody' is not defined"),
        (("record_audio = true", 'record_audio = "yes"'), "record_audio", "true or false"),
        (('"https://hooks.example.com', '"hooks.example.com'), "hooks.example", "not an http"),
    ],
)
def test_a_bad_file_names_file_line_and_problem(
    patch: tuple[str, str], marker: str, words: str
) -> None:
    old, new = patch
    assert old in GOOD
    text = GOOD.replace(old, new, 1)
    line = next(i + 1 for i, t in enumerate(text.splitlines()) if marker in t)
    with pytest.raises(AgentsFileError) as caught:
        parse_agents(text, "agents.toml")
    message = str(caught.value)
    assert message.startswith(f"agents.toml:{line}: "), message
    assert words in message


def test_toml_syntax_errors_keep_tomllibs_line() -> None:
    with pytest.raises(AgentsFileError, match=r"agents.toml: not valid TOML: .*line 2"):
        parse_agents("[agents.a]\ninstructions = \n", "agents.toml")


def test_missing_file_and_empty_file_are_clear(tmp_path: Path) -> None:
    with pytest.raises(AgentsFileError, match="cannot read"):
        load_agents(tmp_path / "nope.toml")
    with pytest.raises(AgentsFileError, match="no agents defined"):
        parse_agents("", "x.toml")
    with pytest.raises(AgentsFileError, match=r"x.toml:1: agents.a.instructions: is required"):
        parse_agents("[agents.a]\ngreeting = 'hi'\n", "x.toml")


def test_python_tools_are_imported_at_start_up(tmp_path: Path) -> None:
    (tmp_path / "agent_tools_ok.py").write_text(
        "async def lookup(order: str) -> dict[str, str]:\n    return {'order': order}\n"
        "def not_async() -> None: ...\n"
    )
    body = """[agents.s]
instructions = "x"
[[agents.s.tools]]
name = "lookup"
description = "Look an order up"
python = "{target}"
"""
    path = tmp_path / "agents.toml"
    path.write_text(body.replace("{target}", "agent_tools_ok:lookup"))
    try:
        tool = load_agents(path).agents["s"].tools[0]
        assert tool == PythonTool("lookup", "Look an order up", "agent_tools_ok:lookup")
        for target, words in [
            ("agent_tools_ok:not_async", "async def"),
            ("no_such_module_xyz:f", "cannot import"),
            ("not a target", "not module:function"),
        ]:
            path.write_text(body.replace("{target}", target))
            with pytest.raises(AgentsFileError, match=f"agents.toml:6: .*{words}"):
                load_agents(path)
    finally:
        sys.modules.pop("agent_tools_ok", None)
        if str(tmp_path) in sys.path:
            sys.path.remove(str(tmp_path))


# --- templates ---------------------------------------------------------------------


def test_templates_fill_names_and_refuse_everything_else() -> None:
    assert render("Hi {name}, {{x}}", {"name": "Ada"}) == "Hi Ada, {x}"
    assert placeholders("{a} {b} {a}") == ("a", "b")
    for bad in ("{a.b}", "{a[0]}", "{a!r}", "{a:>10}", "{0}", "{}", "oops }"):
        with pytest.raises(TemplateError):
            placeholders(bad)
    with pytest.raises(TemplateError, match=r"no value for \{who\}"):
        render("Hi {who}", {})


@given(st.text(max_size=60))
def test_escaped_text_renders_to_itself(text: str) -> None:
    assert render(escape(text), {}) == text


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), st.text(max_size=20)))
def test_values_are_inserted_literally(values: dict[str, str]) -> None:
    """A value that looks like a template is never expanded again."""
    template = " ".join("{" + k + "}" for k in values)
    assert render(template, values) == " ".join(values.values())


# --- selection -----------------------------------------------------------------------


def test_selection_url_token_and_resolver() -> None:
    book = parse_agents(GOOD, "agents.toml")
    facts = CallFacts("call-1", "browser", caller="ada")
    assert requested_agent(book, None, AgentChoice()).name == "concierge"
    assert requested_agent(book, "plain", AgentChoice()).name == "plain"
    assert requested_agent(book, None, AgentChoice("plain")).name == "plain"
    with pytest.raises(AgentRefused) as unknown:
        requested_agent(book, "nobody", AgentChoice())
    assert unknown.value.reason == "unknown_agent"
    with pytest.raises(AgentRefused) as mismatch:
        requested_agent(book, "concierge", AgentChoice("plain"))
    assert mismatch.value.reason == "agent_mismatch"

    agent = book.agents["concierge"]
    token = AgentChoice(variables={"hotel": "Grand"})
    resolver = AgentChoice(overrides={"greeting": "Bonjour {caller}!", "voice": "v2"})
    settings = call_settings(CallSettings(), agent, facts, token, resolver)
    assert settings.system_prompt == "You are the front desk of Grand. Caller: ada."
    assert settings.greeting == "Bonjour ada!" and settings.greeting_interruptible is False
    assert (settings.voice_id, settings.language) == ("v2", "fr-FR")
    assert settings.turn.idle_prompt_s == 8.0 and settings.turn.goodbye == "Bye for now."
    assert settings.agent is not None and settings.agent.name == "concierge"
    # The caller's audio.input.start without voice/language keeps the agent's.
    started = settings.with_input_start(InputStart("e", 16_000))
    assert (started.voice_id, started.language) == ("v2", "fr-FR")
    assert started.with_input_start(InputStart("e", 16_000, "de-DE")).language == "de-DE"


def test_a_required_variable_missing_refuses_the_call() -> None:
    book = parse_agents(
        '[agents.a]\ninstructions = "Order {order}"\nrequired_variables = ["order"]\n'
    )
    facts = CallFacts("c", "browser")
    with pytest.raises(AgentRefused) as caught:
        call_settings(CallSettings(), book.agents["a"], facts)
    assert caught.value.reason == "missing_variable" and "{order}" in caught.value.message
    filled = call_settings(
        CallSettings(), book.agents["a"], facts, AgentChoice(variables={"order": "42"})
    )
    assert filled.system_prompt == "Order 42"


def test_resolver_answers_are_checked() -> None:
    assert parse_choice({"agent": "a", "variables": {"x": "1"}}, "r") == AgentChoice(
        "a", {"x": "1"}
    )
    bads: list[object] = [[], {"agent": 3}, {"variables": {"x": 1}}, {"overrides": {"model": "x"}}]
    for bad in bads:
        with pytest.raises(ValueError):
            parse_choice(bad, "r")


def test_call_token_carries_agent_claims() -> None:
    secret = "s" * 40
    token = call_token(secret, agent="plain", variables={"hotel": "Grand"}, now=1000.0)
    claims = verify_token(secret.encode(), token, now=1001.0, audience=WS_AUDIENCE)
    assert (claims.agent, dict(claims.variables)) == ("plain", {"hotel": "Grand"})
    with pytest.raises(ValueError):
        call_token(secret, variables={"not a name": "x"})


# --- the greeting decision (pure TurnState) --------------------------------------------


def _greeting_settings(interruptible: bool = True) -> CallSettings:
    return attrs.evolve(CallSettings(), greeting="Hello!", greeting_interruptible=interruptible)


def test_the_greeting_is_asked_for_once_at_the_first_input_start() -> None:
    settings = _greeting_settings(interruptible=False)
    turns = TurnState(settings)
    started = settings.with_input_start(InputStart("e", 8000))
    actions = turns.handle(InputStarted(started, 0.0), 0.0)
    assert len(actions) == 1 and isinstance(actions[0], Respond)
    request = actions[0].request
    assert (request.text, request.canned, request.interruptible) == ("Hello!", True, False)
    assert turns.handle(InputStarted(started, 1.0), 1.0) == []


def test_a_typed_first_turn_hears_the_greeting_first() -> None:
    turns = TurnState(_greeting_settings())
    actions = turns.handle(TextTurn("hi there", 0.0), 0.0)
    texts = [a.request.text for a in actions if isinstance(a, Respond)]
    assert texts == ["Hello!", "hi there"]


def test_no_greeting_no_request() -> None:
    turns = TurnState(CallSettings())
    assert turns.handle(InputStarted(CallSettings(sample_rate=16_000), 0.0), 0.0) == []


# --- the command line ------------------------------------------------------------------


def test_token_command_binds_an_agent_and_variables(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vantum.cli import main
    from vantum.server.auth import new_secret

    secret = new_secret()
    monkeypatch.setenv("VANTUM_AUTH_SECRET", secret)
    argv = ["token", "--agent", "support", "--var", "order=12=34", "--var", "who=Ada"]
    assert main(argv) == 0
    token = capsys.readouterr().out.strip()
    claims = verify_token(secret.encode(), token, now=time.time(), audience="ws")
    assert claims.agent == "support"
    assert dict(claims.variables) == {"order": "12=34", "who": "Ada"}
    with pytest.raises(SystemExit):
        main(["token", "--var", "no-equals-sign"])


def test_serve_with_a_bad_agents_file_stops_at_start_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vantum.cli import main

    bad = tmp_path / "agents.toml"
    bad.write_text('[agents.a]\ninstructions = "Hi {nme}"\nvariables = { name = "x" }\n')
    assert main(["serve", "--agents", str(bad), "--insecure-no-auth"]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: agents.a.instructions: unknown variable {{nme}}" in err
    assert main(["serve", "--default-agent", "other", "--insecure-no-auth"]) == 2
    assert "needs an agents file" in capsys.readouterr().err


def test_resolver_settings_are_checked() -> None:
    from vantum.config import Config
    from vantum.errors import ConfigError

    env = {"VANTUM_AGENT_RESOLVER_URL": "http://127.0.0.1:9/resolve"}
    with pytest.raises(ConfigError, match="needs VANTUM_AGENT_RESOLVER_SECRET"):
        Config.from_env(env)
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Config.from_env({**env, "VANTUM_AGENT_RESOLVER_SECRET": "short"})
    ok = Config.from_env({**env, "VANTUM_AGENT_RESOLVER_SECRET": "s" * 32})
    assert ok.agent_resolver_timeout_s == 1.5
