"""The loop-stall monitor's garbage-collection watch (vantum/stall.py)."""

from __future__ import annotations

import gc
import logging

import pytest

from vantum.stall import GcWatch


class _Ticks:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_long_collection_is_counted_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    clock = _Ticks()
    watch = GcWatch(threshold_s=0.010, clock=clock)
    watch("start", {"generation": 0})
    clock.now = 0.002
    watch("stop", {"generation": 0, "collected": 3})
    watch("start", {"generation": 2})
    clock.now = 0.040
    with caplog.at_level(logging.WARNING, logger="vantum.stall"):
        watch("stop", {"generation": 2, "collected": 900})
    assert (watch.collections, watch.pauses) == (2, 1)
    assert watch.longest_s == pytest.approx(0.038)
    assert watch.total_s == pytest.approx(0.040)
    (record,) = caplog.records
    assert "generation 2" in record.getMessage() and "38.0 ms" in record.getMessage()


def test_installed_it_sees_the_interpreters_collections() -> None:
    watch = GcWatch(threshold_s=10.0).install()
    try:
        gc.collect()
    finally:
        watch.remove()
    assert watch.collections >= 1 and watch.pauses == 0
    assert watch not in gc.callbacks


def test_the_env_switches_on_the_monitor_and_the_gc_watch_on_the_chosen_clock() -> None:
    import time

    import trio

    from vantum.stall import install_from_env

    async def main() -> None:
        assert install_from_env({}) is None
        monitor = install_from_env({"VANTUM_STALL_MS": "5", "VANTUM_STALL_CLOCK": "cpu"})
        assert monitor is not None and monitor.threshold_s == 0.005
        assert monitor.clock is time.thread_time
        async with trio.open_nursery() as nursery:  # a task whose steps all end here
            nursery.start_soon(trio.lowlevel.checkpoint)
        assert monitor.steps > 0

    before = list(gc.callbacks)
    try:
        trio.run(main)
        (watch,) = [c for c in gc.callbacks if c not in before]
        assert isinstance(watch, GcWatch) and watch.clock is time.thread_time
    finally:
        gc.callbacks[:] = before
