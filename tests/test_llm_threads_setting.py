"""``VANTUM_LLM_THREADS``: how many threads llama.cpp decodes the offline LLM with.

Two by default (one on a single-core machine): on an otherwise idle 2-core machine the
second thread nearly doubles generation (12.6 -> 24 tokens/s measured) and halves the
offline voice-to-voice time; a number overrides it, anything else stops the start-up
with a clear error. Choosing the engine does not load the model, so these run in CI.
"""

from __future__ import annotations

import os

import pytest

from vantum.config import Config
from vantum.errors import ConfigError
from vantum.providers.cyllama_llm import CyllamaLLM, cyllama_available
from vantum.server.engines import choose_engines, llm_threads

needs_cyllama = pytest.mark.skipif(
    not cyllama_available(), reason="cyllama and the packaged model (vantum[embedded])"
)


def test_the_setting_is_read_and_zero_means_automatic() -> None:
    assert Config.from_env({}).llm_threads == 0
    assert Config.from_env({"VANTUM_LLM_THREADS": "3"}).llm_threads == 3
    cores = len(os.sched_getaffinity(0))
    assert llm_threads(Config.from_env({})) == min(2, cores)
    assert llm_threads(Config.from_env({"VANTUM_LLM_THREADS": "1"})) == 1


@pytest.mark.parametrize("bad", ["-1", "65", "two"])
def test_a_bad_value_is_a_clear_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="VANTUM_LLM_THREADS"):
        Config.from_env({"VANTUM_LLM_THREADS": bad})


@needs_cyllama
def test_the_offline_llm_gets_the_threads_and_the_log_says_how_many() -> None:
    engines, names, why = choose_engines(Config.from_env({"VANTUM_LLM_THREADS": "1"}))
    assert isinstance(engines.llm, CyllamaLLM) and engines.llm.n_threads == 1
    assert names["llm"] == "qwen2.5-coder-0.5b"
    assert why["llm"] == "offline, installed; 1 thread"
    engines, _names, why = choose_engines(Config.from_env({}))
    assert isinstance(engines.llm, CyllamaLLM)
    assert engines.llm.n_threads == min(2, len(os.sched_getaffinity(0)))
    assert why["llm"].endswith(
        f"{engines.llm.n_threads} thread" + "s" * (engines.llm.n_threads > 1)
    )
