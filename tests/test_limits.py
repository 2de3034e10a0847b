"""Rate limits: token-bucket laws checked with hypothesis over explicit clocks."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.limits import AudioRateGuard, RateLimiter

# --- RateLimiter ------------------------------------------------------------------


def test_burst_then_sustained_rate() -> None:
    limiter = RateLimiter(rate_per_s=2.0, burst=5)
    assert [limiter.allow("ip", 0.0) for _ in range(6)] == [True] * 5 + [False]
    assert limiter.allow("ip", 0.5) and not limiter.allow("ip", 0.5)
    assert limiter.allow("other", 0.5)  # keys are independent


def test_clock_stepping_back_refills_nothing() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=1)
    assert limiter.allow("k", 100.0)
    assert not limiter.allow("k", 50.0)
    assert not limiter.allow("k", 100.5)
    assert limiter.allow("k", 101.0)


def test_idle_keys_are_forgotten() -> None:
    limiter = RateLimiter(rate_per_s=1.0, burst=2)
    for i in range(1000):
        limiter.allow(f"ip{i}", i * 0.001)
    assert len(limiter) == 1000
    limiter.allow("late", 10.0)  # everyone else has refilled by now
    assert len(limiter) == 1


def test_table_is_bounded_under_a_spray() -> None:
    limiter = RateLimiter(rate_per_s=0.001, burst=1, max_keys=100)
    for i in range(10_000):
        assert limiter.allow(i, 0.0)
    assert len(limiter) == 100
    assert limiter.evicted_active == 9_900


@settings(max_examples=300)
@given(
    rate=st.floats(0.1, 100),
    burst=st.integers(1, 50),
    gaps=st.lists(st.floats(0, 2), min_size=1, max_size=200),
)
def test_allowed_never_exceeds_burst_plus_rate_times_time(
    rate: float, burst: int, gaps: list[float]
) -> None:
    limiter = RateLimiter(rate, burst)
    now, allowed = 0.0, 0
    for gap in gaps:
        now += gap
        allowed += limiter.allow("k", now)
        assert allowed <= burst + rate * now + 1e-6


# --- AudioRateGuard ----------------------------------------------------------------


def test_rejects_a_file_streamed_at_ten_times_real_time() -> None:
    guard = AudioRateGuard(16_000, margin=1.25, window_s=2.0)
    chunk = 320  # 20 ms
    results = [guard.accept(chunk, i * 0.002) for i in range(500)]  # 10x real time
    first_refusal = results.index(False)
    # About window / (speed - margin) seconds of wall time get through: 2 / 8.75 = 0.23 s.
    assert 100 <= first_refusal <= 130
    assert guard.rejections > 0 and guard.rejected_s > 0


def test_initial_burst_is_allowed_then_real_time_forever() -> None:
    guard = AudioRateGuard(8_000, window_s=2.0)
    assert all(guard.accept(160, 0.0) for _ in range(100))  # 2 s buffered at connect
    assert not guard.accept(160, 0.0)
    # Then a microphone at exactly real time is never refused, even for an hour.
    assert all(guard.accept(160, (i + 1) * 0.02) for i in range(180_000))


def test_sample_rate_change_keeps_credit_in_seconds() -> None:
    guard = AudioRateGuard(16_000, window_s=1.0)
    assert guard.accept(8_000, 0.0)  # 0.5 s
    guard.set_sample_rate(48_000)
    assert guard.accept(24_000, 0.0)  # another 0.5 s
    assert not guard.accept(480, 0.0)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        AudioRateGuard(0)
    with pytest.raises(ValueError):
        AudioRateGuard(16_000, margin=0.5)
    with pytest.raises(ValueError):
        AudioRateGuard(16_000).accept(-1, 0.0)
    with pytest.raises(ValueError):
        RateLimiter(0, 1)


chunk_sizes = st.integers(0, 4_800)


@settings(max_examples=400)
@given(
    rate=st.sampled_from([8_000, 16_000, 24_000, 44_100, 48_000]),
    margin=st.floats(1.0, 3.0),
    window=st.floats(0.1, 5.0),
    sends=st.lists(st.tuples(st.floats(0, 0.5), chunk_sizes), min_size=1, max_size=300),
)
def test_accepted_audio_is_bounded_over_every_interval(
    rate: int, margin: float, window: float, sends: list[tuple[float, int]]
) -> None:
    """Over any [t_i, t_j], accepted audio <= window + margin * (t_j - t_i) (in seconds)."""
    guard = AudioRateGuard(rate, margin=margin, window_s=window)
    now, log = 0.0, []
    for gap, n in sends:
        now += gap
        if guard.accept(n, now):
            log.append((now, n / rate))
    for i in range(len(log)):
        total = 0.0
        for j in range(i, len(log)):
            total += log[j][1]
            assert total <= window + margin * (log[j][0] - log[i][0]) + 1e-6


@settings(max_examples=300)
@given(
    rate=st.sampled_from([8_000, 16_000, 48_000]),
    chunk_ms=st.sampled_from([10, 20, 40, 100, 250]),
    jitter=st.lists(st.floats(-0.5, 0.5), min_size=1, max_size=400),
)
def test_a_real_time_client_with_jitter_is_never_refused(
    rate: int, chunk_ms: int, jitter: list[float]
) -> None:
    """Chunks sent on a real-time schedule, each up to half a window early or late."""
    guard = AudioRateGuard(rate, margin=1.0, window_s=2.0)
    n = rate * chunk_ms // 1000
    for i, j in enumerate(jitter):
        assert guard.accept(n, max(0.0, i * chunk_ms / 1000 + j)), i


@settings(max_examples=200)
@given(speed=st.floats(1.5, 50), margin=st.floats(1.0, 1.4), window=st.floats(0.5, 3))
def test_any_client_faster_than_the_margin_is_refused_in_bounded_time(
    speed: float, margin: float, window: float
) -> None:
    guard = AudioRateGuard(16_000, margin=margin, window_s=window)
    chunk_s = 0.02
    deadline = window / (speed - margin) + 2 * chunk_s
    i = 0
    while guard.accept(320, i * chunk_s / speed):
        i += 1
        assert i * chunk_s / speed <= deadline
