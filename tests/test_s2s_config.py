"""Choosing speech-to-speech mode: ``VANTUM_ENGINE=s2s`` and ``OPENAI_REALTIME_MODEL``;
the cascade stays the default."""

from __future__ import annotations

import pytest

from vantum.config import Config
from vantum.errors import ConfigError
from vantum.providers.realtime.openai_s2s import OpenAIRealtime
from vantum.server.engines import _s2s


def test_the_cascade_is_the_default() -> None:
    assert Config.from_env({}).engine == "cascade"
    assert _s2s(Config.from_env({"OPENAI_API_KEY": "k"})) is None


def test_s2s_mode_uses_openai_realtime_with_the_configured_model() -> None:
    env = {"VANTUM_ENGINE": "s2s", "OPENAI_API_KEY": "k", "OPENAI_REALTIME_MODEL": "gpt-rt-x"}
    engine = _s2s(Config.from_env(env))
    assert isinstance(engine, OpenAIRealtime)
    assert (engine.model, engine.url) == ("gpt-rt-x", "wss://api.openai.com/v1/realtime")


@pytest.mark.parametrize(
    "env",
    [{"VANTUM_ENGINE": "s2s"}, {"VANTUM_ENGINE": "speech", "OPENAI_API_KEY": "k"}],
)
def test_s2s_mode_refuses_a_bad_configuration(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        _s2s(Config.from_env(env))
