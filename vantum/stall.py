"""A stall monitor for the trio event loop.

Everything a call does runs on one thread, so one task step that computes for long
(a model inference, a big encode) delays every other call's audio. The monitor is
a trio ``Instrument`` that times each task step (``before_task_step`` to
``after_task_step``) and keeps the longest, the count over a threshold and the
task that did it; over the threshold it logs a warning naming the task.

Opt-in: ``VANTUM_STALL_MS=10`` makes ``vantum serve`` install one (it costs two
clock reads per task step); ``benchmarks/turn_taking.py`` and the tests install
it directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

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


def install_from_env(env: dict[str, str] | None = None) -> StallMonitor | None:
    """Install a monitor when ``VANTUM_STALL_MS`` is set (call inside ``trio.run``)."""
    import os

    raw = (os.environ if env is None else env).get("VANTUM_STALL_MS", "").strip()
    if not raw:
        return None
    monitor = StallMonitor(threshold_s=float(raw) / 1000)
    trio.lowlevel.add_instrument(monitor)
    log.info("stall monitor on: task steps over %s ms are logged", raw)
    return monitor
