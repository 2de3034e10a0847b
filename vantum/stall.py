"""A stall monitor for the trio event loop.

Everything a call does runs on one thread, so one task step that computes for long
(a model inference, a big encode) delays every other call's audio. The monitor is
a trio ``Instrument`` that times each task step (``before_task_step`` to
``after_task_step``) and keeps the longest, the count over a threshold and the
task that did it; over the threshold it logs a warning naming the task.

Opt-in: ``VANTUM_STALL_MS=10`` makes ``vantum serve`` install one (it costs two
clock reads per task step); ``benchmarks/turn_taking.py`` and the tests install
it directly, ``benchmarks/replay.py --stall-ms N`` switches it on in the server
under test and counts the warnings per load step.

A task step is not the only way the loop stops: the cyclic garbage collector runs
inside whichever step allocated last, and a full (generation 2) collection of a
server holding hundreds of calls can take tens of milliseconds. :class:`GcWatch`
times every collection through ``gc.callbacks`` and logs those over the same
threshold, so a stall can be told apart from the collection inside it.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

log = logging.getLogger("vantum.stall")


@attrs.define(eq=False)  # trio keeps instruments in a set
class StallMonitor(trio.abc.Instrument):
    threshold_s: float = 0.010
    """Steps longer than this count as stalls (and are logged when ``log_stalls``)."""
    log_stalls: bool = True
    clock: Callable[[], float] = time.perf_counter
    """Wall time by default; ``time.thread_time`` counts only the loop thread's own
    CPU, so a step the OS preempted on a busy machine does not look like a stall."""
    steps: int = 0
    stalls: int = 0
    longest_s: float = 0.0
    longest_task: str = ""
    by_task: dict[str, float] | None = None
    """When a dict, the longest step of each task name (to tell whose steps were long)."""
    _started: dict[int, float] = attrs.field(factory=dict)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._started[id(task)] = self.clock()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        began = self._started.pop(id(task), None)
        if began is None:
            return
        took = self.clock() - began
        self.steps += 1
        if self.by_task is not None and took > self.by_task.get(task.name, 0.0):
            self.by_task[task.name] = took
        if took > self.longest_s:
            self.longest_s = took
            self.longest_task = task.name
        if took > self.threshold_s:
            self.stalls += 1
            if self.log_stalls:
                log.warning("event loop stalled %.1f ms in task %s", took * 1000, task.name)


@attrs.define(eq=False)
class GcWatch:
    """Times the cyclic garbage collector's runs (``gc.callbacks``); logs the long ones."""

    threshold_s: float = 0.010
    log_pauses: bool = True
    clock: Callable[[], float] = time.perf_counter
    collections: int = 0
    pauses: int = 0
    """Collections longer than the threshold."""
    longest_s: float = 0.0
    total_s: float = 0.0
    _began: float | None = None

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = self.clock()
            return
        if self._began is None:
            return
        took, self._began = self.clock() - self._began, None
        self.collections += 1
        self.total_s += took
        self.longest_s = max(self.longest_s, took)
        if took > self.threshold_s:
            self.pauses += 1
            if self.log_pauses:
                log.warning(
                    "garbage collection (generation %s) paused the loop %.1f ms, %s collected",
                    info.get("generation"),
                    took * 1000,
                    info.get("collected"),
                )

    def install(self) -> GcWatch:
        gc.callbacks.append(self)
        return self

    def remove(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)


def install_from_env(env: dict[str, str] | None = None) -> StallMonitor | None:
    """Install a monitor when ``VANTUM_STALL_MS`` is set (call inside ``trio.run``)."""
    import os

    raw = (os.environ if env is None else env).get("VANTUM_STALL_MS", "").strip()
    if not raw:
        return None
    # VANTUM_STALL_CLOCK=cpu times the loop thread's own CPU: on a shared machine a step
    # the OS preempted is then not counted as a stall (wall, the default, counts it).
    cpu = (os.environ if env is None else env).get("VANTUM_STALL_CLOCK", "").strip() == "cpu"
    monitor = StallMonitor(
        threshold_s=float(raw) / 1000, clock=time.thread_time if cpu else time.perf_counter
    )
    trio.lowlevel.add_instrument(monitor)
    GcWatch(threshold_s=monitor.threshold_s, clock=monitor.clock).install()
    log.info("stall monitor on: task steps and garbage collections over %s ms are logged", raw)
    return monitor
