"""The knee sweep's search (benchmarks/knee.py): where it lands, and when it stops."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from knee import KneeSearch, Outcome


def _run(search: KneeSearch, knee: int, load_limit: int | None = None) -> list[int]:
    """Drive ``search`` against a server whose bound holds up to ``knee`` sessions."""
    tried = []
    while (n := search.next_size()) is not None:
        tried.append(n)
        search.record(n, held=n <= knee, load_limited=load_limit is not None and n >= load_limit)
    return tried


@given(
    knee=st.integers(1, 500),
    start=st.integers(1, 60),
    growth=st.floats(1.1, 3.0),
    resolution=st.integers(1, 8),
)
def test_the_bracket_holds_the_knee_and_is_narrow(
    knee: int, start: int, growth: float, resolution: int
) -> None:
    search = KneeSearch(start, growth, resolution, max_sessions=1000, max_steps=100)
    tried = _run(search, knee)
    assert len(tried) == len(set(tried))  # no load measured twice
    if search.outcome is Outcome.NONE_PASSED:
        assert knee < min(tried) or (search.bad is not None and search.bad <= resolution)
        return
    assert search.outcome is Outcome.FOUND
    assert search.good is not None and search.bad is not None
    assert search.good <= knee < search.bad
    assert search.bad - search.good <= resolution


def test_exact_knee_with_unit_resolution() -> None:
    search = KneeSearch(start=10, growth=2, resolution=1)
    tried = _run(search, knee=37)
    assert (search.good, search.bad, search.outcome) == (37, 38, Outcome.FOUND)
    assert tried[:3] == [10, 20, 40]


@given(knee=st.integers(20, 300), limit=st.integers(5, 300))
def test_a_saturated_load_generator_ends_the_search_without_a_server_figure(
    knee: int, limit: int
) -> None:
    search = KneeSearch(start=10, growth=1.5, resolution=2, max_sessions=1000, max_steps=50)
    tried = _run(search, knee, load_limit=limit)
    if max(tried) >= limit:
        assert search.outcome is Outcome.LOAD_LIMITED
        assert tried[-1] >= limit  # the step that saturated was the last one
        if search.good is not None:
            assert search.good <= knee  # what held, held on the server's own merit
    else:
        assert search.outcome is Outcome.FOUND


def test_cap_and_step_budget() -> None:
    capped = KneeSearch(start=10, growth=2, max_sessions=30)
    assert _run(capped, knee=1000) == [10, 20, 30]
    assert capped.outcome is Outcome.CAPPED and capped.good == 30
    short = KneeSearch(start=10, growth=2, max_steps=2)
    assert _run(short, knee=1000) == [10, 20]
    assert short.outcome is Outcome.OUT_OF_STEPS


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        KneeSearch(growth=1.0)
