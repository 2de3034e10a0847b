"""Where a server's CPU goes during a replay step: py-spy, attached from outside.

``replay.py --profile DIR`` records each step of each server with py-spy (a
sampling profiler that reads the process's memory: the server runs unmodified,
nothing is imported into it, ``--nonblocking`` never pauses it) and reduces the
collapsed stacks to the share of samples per *area* — the VAD model, the
WebSocket/HTTP stack, trio's scheduler, Vantum's own code — so a profile at the
knee says what a call's CPU is spent on (issue 21, item 4). The raw file stays
in DIR for flame graphs (``inferno-flamegraph`` or speedscope read it).
"""

from __future__ import annotations

import collections
import contextlib
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

AREAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("VAD model (onnxruntime)", ("onnxruntime/",)),
    (
        "WebSocket + HTTP stack",
        (
            "wsproto/",
            "hypercorn/",
            "h11/",
            "trio_websocket/",
            "websockets/",
            "aiohttp/",
            "uvicorn/",
            "httpx/",
            "httpcore/",
            "anyio/",
        ),
    ),
    ("trio scheduler + sockets", ("trio/", "outcome/")),
    ("asyncio scheduler + sockets", ("asyncio/",)),
    ("JSON / base64 / msgpack", ("json/", "base64.py", "msgpack/")),
    ("Vantum", ("vantum/",)),
    ("Pipecat", ("pipecat/",)),
    ("numpy / resampling", ("numpy/", "samplerate/", "soxr/")),
    ("pydantic / openai SDK", ("pydantic", "openai/")),
)
IDLE_LEAVES = ("EpollIOManager.get_events", "EpollIOManager._epoll_wait", "EpollSelector.select")
"""Innermost frames that are the event loop waiting in ``epoll_wait``: idle time that
py-spy's idle detection does not always recognise under ``--nonblocking``."""
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")


def area_of(path: str) -> str:
    """The area a source file belongs to (by the package in its path)."""
    path = path.replace("\\", "/")
    for area, markers in AREAS:
        if any(m in path for m in markers):
            return area
    return "other (stdlib, interpreter)"


def summarize(raw: str, top: int = 12) -> dict[str, object]:
    """Share of busy samples per area (by the innermost frame: where the CPU was) and
    the heaviest functions, from py-spy's ``--format raw`` (one ``a;b;c N`` per
    stack); samples waiting in epoll are counted apart, as idle."""
    areas: collections.Counter[str] = collections.Counter()
    funcs: collections.Counter[str] = collections.Counter()
    total = idle = 0
    for line in raw.splitlines():
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        leaf = stack.split(";")[-1]
        m = _FRAME.match(leaf)
        func = m.group("func") if m else leaf
        if func in IDLE_LEAVES:
            idle += n
            continue
        path = m.group("file") if m else leaf
        areas[area_of(path)] += n
        funcs[f"{func} ({path.split('site-packages/')[-1]})"] += n
    busy = total - idle
    if not busy:
        return {"samples": total, "busy_samples": 0}
    return {
        "samples": total,
        "busy_samples": busy,
        "areas_pct": {a: round(100 * n / busy, 1) for a, n in areas.most_common()},
        "top_functions_pct": {f: round(100 * n / busy, 1) for f, n in funcs.most_common(top)},
    }


class Recording:
    """One py-spy run attached to ``pid`` (and its children: ``--workers N``)."""

    def __init__(self, pid: int, out: Path, rate: int = 100) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).exists() and shutil.which(exe) is None:
            raise RuntimeError("--profile needs py-spy (pip install py-spy)")
        self.out = out
        self.popen = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(pid),
                "--subprocesses",
                "--nonblocking",
                "--rate",
                str(rate),
                "--format",
                "raw",
                "--output",
                str(out),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )

    def stop(self) -> dict[str, object]:
        """Stop sampling (py-spy writes its file on SIGINT) and summarise it."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGINT)
        try:
            _, err = self.popen.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            _, err = self.popen.communicate()
        with contextlib.suppress(OSError):
            return {"file": str(self.out), **summarize(self.out.read_text())}
        return {"file": None, "error": err.decode(errors="replace")[-500:]}
