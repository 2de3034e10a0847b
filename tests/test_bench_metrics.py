"""Checks of the benchmark's arithmetic (no servers): ``pytest tests/test_bench_metrics.py``."""

from __future__ import annotations

import math

import pytest
from pyspy import area_of
from pyspy import summarize as profile_summary
from replay_harness import (
    REPLY,
    Session,
    Turn,
    Workload,
    capacity,
    compare,
    summarize,
    tail_attribution,
    trailing_silence,
)


def test_floor_counts_the_tokens_until_the_first_sentence_is_decidable() -> None:
    wl = Workload(stt_final=0.15, llm_first_token=0.3, tokens_per_second=50, tts_first_chunk=0.09)
    end = REPLY.index(". ") + 1
    assert wl.llm_first_sentence() == pytest.approx(0.3 + (end // 4) / 50)
    assert wl.floor() == pytest.approx(0.15 + wl.llm_first_sentence() + 0.09)


def test_a_steady_stream_never_runs_dry() -> None:
    turn = Turn(chunks=[(10.0 + 0.04 * i, 0.04) for i in range(50)])
    underruns, dry, end = turn.playout(0.0)
    assert (underruns, dry) == (0, 0.0)
    assert end == pytest.approx(10.0 + 50 * 0.04)
    assert max(turn.late()) == pytest.approx(0.0, abs=1e-9)


def test_a_late_chunk_is_an_underrun_unless_the_jitter_buffer_covers_it() -> None:
    chunks = [(0.0, 0.04), (0.04, 0.04), (0.13, 0.04), (0.17, 0.04)]
    turn = Turn(chunks=chunks)
    underruns, dry, _ = turn.playout(0.0)
    assert underruns == 1
    assert dry == pytest.approx(0.05)
    assert turn.late() == pytest.approx([0.0, 0.05, 0.0])
    assert turn.playout(0.06)[0] == 0


def test_a_gap_after_a_burst_is_jitter_but_the_buffer_hides_it() -> None:
    # Lateness is RFC 3550's transit difference D: inter-arrival minus the audio
    # duration in between. After 200 ms arrived at once, a 160 ms pause is jitter
    # on the wire but no underrun for a player.
    turn = Turn(chunks=[(0.0, 0.04)] * 5 + [(0.2, 0.04)])
    assert turn.playout(0.0)[0] == 0
    assert turn.late() == pytest.approx([0.0, 0.0, 0.0, 0.0, 0.16])


def test_summary_subtracts_the_floor_and_counts_failures() -> None:
    wl = Workload()
    ok = Turn(end_at=1.0, first_audio=1.8, chunks=[(1.8, 0.04), (1.84, 0.04)], complete=True)
    lost = Turn(end_at=5.0)
    s = Session(started=0.0, ended=60.0, turns=[ok, lost])
    out = summarize([s, Session(started=0.0, ended=30.0, error="OSError: refused")], wl, 0.7)
    assert out["turns"] == 2 and out["turns_answered"] == 1
    assert out["sessions_failed"] == 1
    assert out["v2v_ms"]["p50"] == pytest.approx(800.0)
    assert out["added_ms"]["p50"] == pytest.approx(100.0)
    assert out["call_minutes"] == pytest.approx(1.5)
    assert out["errors"] == ["OSError: refused"]


def _step(n: int, p99: float, underruns: int = 0, cpu: float = 0.5) -> dict[str, object]:
    return {
        "sessions": n,
        "added_ms": {"p50": p99 / 2, "p99": p99},
        "v2v_ms": {"p50": 700 + p99 / 2, "p99": 700 + p99},
        "underrun_turns": underruns,
        "turns": 3 * n,
        "turns_answered": 3 * n,
        "server_cpu_s_per_call_min": cpu,
    }


def test_capacity_is_the_largest_load_within_the_budget() -> None:
    steps = [_step(25, 8), _step(50, 20), _step(100, 80), _step(200, 300, underruns=4)]
    cap = capacity(steps)
    assert cap["max_sessions_per_core_measured"] == 50
    assert not cap["measured_is_largest_tested"]
    assert cap["cpu_projected_sessions_per_core"] == 120
    assert capacity([_step(25, 8)])["measured_is_largest_tested"]
    assert capacity([_step(25, 80)])["max_sessions_per_core_measured"] == 0


def test_compare_reports_pipecat_over_vantum() -> None:
    systems = {
        "vantum": {"steps": [_step(25, 10, cpu=0.5)], "idle_rss": {"per_session_kb": 100.0}},
        "pipecat": {"steps": [_step(25, 40, cpu=2.0)], "idle_rss": {"per_session_kb": 2000.0}},
    }
    row = compare(systems)["by_sessions"]["25"]
    assert row["added_p99"]["ratio"] == 4.0
    assert row["cpu_s_per_call_min"]["ratio"] == 4.0
    assert compare(systems)["idle_rss_kb"]["ratio"] == 20.0
    assert compare({"vantum": systems["vantum"]}) == {}


def test_trailing_silence_of_a_clip() -> None:
    rate = 16_000
    loud = b"\x00\x10" * (rate // 2)
    assert trailing_silence(loud + bytes(2 * rate // 4), rate) == pytest.approx(0.25, abs=1e-3)
    assert trailing_silence(bytes(200), rate) == 0.0
    assert not math.isnan(trailing_silence(loud, rate))


def test_capacity_prefers_latency_net_of_the_fakes_overhead() -> None:
    steps = [_step(10, 70), _step(20, 200)]
    steps[0]["added_net_ms"] = {"p50": 10.0, "p99": 32.0}
    steps[1]["added_net_ms"] = {"p50": 80.0, "p99": 162.0}
    cap = capacity(steps)
    assert cap["capacity_latency_metric"] == "added_net_ms"
    assert cap["max_sessions_per_core_measured"] == 10


def _answered(v2v_ms: float, llm_ms: float) -> Turn:
    metrics = {
        "endOfSpeechToFinalMs": 150.0,
        "finalToLlmFirstTokenMs": llm_ms,
        "llmFirstTokenToTtsFirstAudioMs": 290.0,
        "voiceToVoiceMs": 150.0 + llm_ms + 290.0,
    }
    return Turn(end_at=0.0, first_audio=v2v_ms / 1000, complete=True, metrics=metrics)


def test_tail_attribution_names_the_stage_the_slow_turns_lose_time_in() -> None:
    fast = [_answered(750.0 + i, 300.0) for i in range(38)]
    slow = [_answered(850.0, 390.0), _answered(860.0, 400.0)]  # 2 of 40: the slowest 5 %
    out = tail_attribution(fast + slow)
    assert out is not None
    tail, rest = out["slowest_5pct"], out["rest"]
    assert tail["finalToLlmFirstTokenMs"] - rest["finalToLlmFirstTokenMs"] == pytest.approx(95.0)
    assert tail["endOfSpeechToFinalMs"] == rest["endOfSpeechToFinalMs"]
    # What the server's own clock does not cover: client v2v less its voiceToVoiceMs.
    assert tail["outsideServerMs"] == pytest.approx(855.0 - 835.0)
    assert tail_attribution(fast[:1]) is None


def test_profile_summary_groups_samples_by_where_the_cpu_was() -> None:
    raw = "\n".join(
        [
            "main (vantum/cli.py:10);run (onnxruntime/capi/x.py:406) 30",
            "main (vantum/cli.py:10);events (wsproto/connection.py:193) 10",
            "main (vantum/cli.py:10);feed (vantum/pipeline/audio_path.py:239) 10",
            "run (trio/_core/_run.py:1);EpollIOManager.get_events (trio/_core/_io_epoll.py:2) 50",
            "garbage",
        ]
    )
    out = profile_summary(raw)
    assert out["samples"] == 100 and out["busy_samples"] == 50  # waiting in epoll is idle
    assert out["areas_pct"] == {
        "VAD model (onnxruntime)": 60.0,
        "WebSocket + HTTP stack": 20.0,
        "Vantum": 20.0,
    }
    assert area_of("/usr/lib/python3.11/json/decoder.py") == "JSON / base64 / msgpack"
    assert profile_summary("") == {"samples": 0, "busy_samples": 0}
