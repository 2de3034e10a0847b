"""The knee sweep's search (benchmarks/knee.py): where it lands, and when it stops."""

from __future__ import annotations

from typing import Any

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


def _step(p99: float | None, **over: object) -> dict[str, object]:
    step: dict[str, object] = {
        "added_ms": {"p99": p99},
        "underrun_turns": 0,
        "turns": 10,
        "turns_answered": 10,
        "loadgen_cpu_util": 0.3,
        "fakes_runqueue_wait_ms_per_s": 5.0,
        "loadgen_runqueue_wait_ms_per_s": 5.0,
    }
    step.update(over)
    return step


def test_the_bound_is_p99_net_of_the_fakes_no_underrun_every_turn_answered() -> None:
    from replay_harness import holds

    assert holds(_step(80.0), overhead_ms=35.0)  # 45 ms net
    assert not holds(_step(90.0), overhead_ms=35.0)
    assert not holds(_step(20.0, underrun_turns=1), overhead_ms=None)
    assert not holds(_step(20.0, turns_answered=9), overhead_ms=None)
    assert not holds(_step(None), overhead_ms=None)


def test_a_busy_or_starved_load_side_is_named() -> None:
    from replay_harness import _load_cores, load_limited

    assert load_limited(_step(10.0)) == ""
    busy = load_limited(_step(10.0, loadgen_cpu_util=0.95 * _load_cores()))
    assert "of their core" in busy
    starved = load_limited(_step(10.0, fakes_runqueue_wait_ms_per_s=200.0))
    assert "waited 205 ms/s" in starved


def test_stall_report_reads_only_the_steps_log_lines(tmp_path: object) -> None:
    from pathlib import Path

    from replay_harness import stall_report

    log = Path(str(tmp_path)) / "server.log"
    log.write_text("WARNING event loop stalled 99.0 ms in task before.the.step\n")
    offset = log.stat().st_size
    with open(log, "a") as f:
        f.write(
            "WARNING vantum.stall: event loop stalled 12.5 ms in task vantum.a.run_audio_path\n"
        )
        f.write('{"msg": "event loop stalled 30.1 ms in task x.writer", "level": "WARNING"}\n')
        f.write("WARNING event loop stalled 14.0 ms in task vantum.a.run_audio_path\n")
        f.write("WARNING garbage collection (generation 2) paused the loop 21.5 ms, 4 collected\n")
    report = stall_report(log, offset)
    assert report["count"] == 3 and report["max_ms"] == 30.1
    assert report["by_task"]["run_audio_path"] == {"count": 2, "max_ms": 14.0}
    assert report["by_task"]["writer"] == {"count": 1, "max_ms": 30.1}
    assert (report["gc_pauses"], report["gc_max_ms"]) == (1, 21.5)
    assert report["gc_by_generation"] == {"2": 1}


def test_knee_table_sets_the_servers_side_by_side_with_the_floor_at_the_calls_rate() -> None:
    from replay_harness import knee_table

    systems: dict[str, dict[str, Any]] = {
        "vantum": {
            "knee": {"knee_sessions": 60, "outcome": "found"},
            "steps": [{"client_messages_per_session_s": 30.0}],
        },
        "pipecat": {"knee": {"knee_sessions": 20, "outcome": "found"}},
        "floor": {
            "floor": {
                "server_cpu_us_per_message": 200.0,
                "sessions_per_core_on_the_stack_alone": 66,
            }
        },
    }
    table = knee_table(systems)
    assert table["floor"]["sessions_per_core_at_call_mix"] == 166  # 1e6 / (200 * 30)
    assert table["ratios"] == {"vantum/pipecat": 3.0, "vantum/floor": 0.36}
    # A knee the load generator cut short is a lower bound: no ratio is made from it.
    systems["vantum"]["knee"] = {"knee_sessions": 4, "outcome": "load_generator_limit"}
    assert "ratios" not in knee_table(systems)
