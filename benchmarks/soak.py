"""Soak: sessions join and leave for a long time while providers misbehave.

    python benchmarks/soak.py                 # 30 minutes
    python benchmarks/soak.py --minutes 3
    python benchmarks/soak.py --quick         # 1 minute

Runs the fakes and a real server in this process (``vantum.testing.stack``) and
``--concurrency`` callers that connect, talk (audio turns, text turns, barge-ins,
hanging up mid-answer) and leave, over and over. Every ``--fault-every`` seconds
one fault is injected in rotation: OpenAI 429 and 500 and a mid-stream stall, a
failed Cartesia context and a dropped Cartesia socket, a Deepgram connection cut
mid-audio, and two hostile callers: a slow reader (asks for a long answer, shrinks
its receive buffer and stops reading) and an oversize peer (sends a frame far over
the limit and ignores the close). The server must cut each of those, and only those.

Every ``--sample-every`` seconds it records RSS, open sessions and trio task
counts. Passing means: memory flat after warm-up, task count back to its
baseline once idle, no stalled turn and no hung session. Writes a JSON report
(``--out``) and prints a table. RSS is the whole process: fakes and callers too
(their recordings are cleared at every sample so they do not grow).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import gc
import itertools
import json
import logging
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import psutil
import trio

from vantum.protocol import events as ev
from vantum.records import open_store
from vantum.records.recorder import DROPPED_KIND
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_cartesia import FakeCartesiaConfig
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.raw_ws import OP_BINARY, RawWebSocket, ServerClosed, frame_header
from vantum.testing.stack import Stack, open_stack

RATE = 16_000
TURN_TIMEOUT = 20.0
SESSION_TIMEOUT = 90.0
ERROR_GRACE = 3.0
"""After an error event with no answer started, how long to wait for a fallback."""

DG = FakeDeepgramConfig(
    script=("hello there", "what time is it", "book a table for two"),
    final_latency=0.05,
    interim_latency=0.02,
)
LONG_STORY = "Once upon a time there was a very long story that went on and on. " * 100


def respond(messages: list[dict[str, Any]]) -> str:
    """Short answers, except the long one a slow reader asks for to fill its buffers."""
    return LONG_STORY if "long story" in str(messages[-1]["content"]) else "Sure. ||BREAK|| Done."


OA = FakeOpenAIConfig(first_token_latency=0.05, tokens_per_second=400, responder=respond)
CA = FakeCartesiaConfig(first_chunk_latency=0.03, realtime_factor=20)
UTTERANCES = [speech_like(0.6, RATE, seed=i) + silence(0.2, RATE) for i in range(3)]
"""A few fixed utterances, so the fake recogniser's per-utterance table stays small."""
STALL_S = 10.0
"""How long a slow reader stops reading: well past the write timeout (2 s)."""
IGNORE_CLOSE_S = 5.0
"""How long an oversize peer ignores the server's close before it looks."""
OVERSIZE = 64 << 20
"""The frame length an oversize peer declares (the limit is 1 MiB)."""
PAYLOAD = memoryview(bytes(8 << 20))
"""What an oversize peer actually sends of it (shared by all of them)."""


class ErrorLogCounter(logging.Handler):
    """Counts ERROR records from the server: an unhandled exception in a session shows here."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count: collections.Counter[str] = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(("vantum", "hypercorn")):
            self.count[f"{record.name}: {record.getMessage()[:80]}"] += 1


@attrs.define
class Stats:
    sessions: int = 0
    turns: collections.Counter[str] = attrs.Factory(collections.Counter)
    errors: collections.Counter[str] = attrs.Factory(collections.Counter)
    failures: collections.Counter[str] = attrs.Factory(collections.Counter)
    faults: collections.Counter[str] = attrs.Factory(collections.Counter)
    hostile_not_cut: collections.Counter[str] = attrs.Factory(collections.Counter)
    """Hostile callers whose session was still open when they looked."""
    hung: int = 0
    active: int = 0


async def collect(client: BrowserClient, stats: Stats) -> str:
    """One answer's outcome: ok, recovered (errors, but audio), clean_error, or stalled."""
    started = errored = False
    audio = 0
    with trio.move_on_after(TURN_TIMEOUT) as scope:
        while True:
            grace = trio.current_time() + ERROR_GRACE if errored and not started else None
            with trio.move_on_at(grace if grace is not None else float("inf")) as wait:
                event = await client.next_event()
            if wait.cancelled_caught:
                return "clean_error"
            kind = event["eventType"]
            if ".error." in kind or kind.startswith("error."):
                stats.errors[kind] += 1
                errored = True
            elif kind == ev.RESPONSE_START:
                started = True
            elif kind == ev.OUTPUT_CHUNK:
                audio += len(event["payload"]["audio"])
            elif kind == ev.METRICS_TURN:
                if not audio:
                    return "clean_error" if errored else "no_audio"
                return "recovered" if errored else "ok"
    assert scope.cancelled_caught
    return "stalled"


async def one_session(url: str, rng: random.Random, stats: Stats) -> None:
    async with BrowserClient.connect(url) as client:
        scenario = rng.choice(["audio", "audio", "text", "barge_in", "hang_up"])
        if scenario == "audio":
            for _ in range(rng.randint(1, 3)):
                await client.start(RATE)
                await client.stream_audio(rng.choice(UTTERANCES), RATE, realtime=False)
                await client.end_turn()
                stats.turns[await collect(client, stats)] += 1
        elif scenario == "text":
            for i in range(rng.randint(1, 3)):
                await client.send(ev.TEXT_INPUT, {"text": f"question {i}"})
                stats.turns[await collect(client, stats)] += 1
        else:
            await client.send(ev.TEXT_INPUT, {"text": "tell me a story"})
            with trio.move_on_after(TURN_TIMEOUT):
                while (await client.next_event())["eventType"] != ev.OUTPUT_CHUNK:
                    pass
            if scenario == "hang_up":
                stats.turns["hung_up_mid_answer"] += 1
                return
            await client.send(ev.TEXT_INPUT, {"text": "stop, another question"})
            stats.turns["barged_" + await collect(client, stats)] += 1
            stats.turns[await collect(client, stats)] += 1


async def caller(stack: Stack, rng: random.Random, stats: Stats, stop_at: float) -> None:
    while trio.current_time() < stop_at:
        stats.active += 1
        try:
            with trio.fail_after(SESSION_TIMEOUT):
                await one_session(stack.ws_url, rng, stats)
            stats.sessions += 1
        except trio.TooSlowError:
            stats.hung += 1
        except Exception as exc:  # recorded, and the soak goes on
            stats.failures[type(exc).__name__] += 1
        finally:
            stats.active -= 1
        await trio.sleep(rng.uniform(0, 0.2))


async def slow_reader(stack: Stack, stats: Stats) -> None:
    """Asks for a long answer, stops reading once it starts, looks again after STALL_S."""
    async with RawWebSocket.connect(stack.ws_url, rcvbuf=4096) as peer:
        await peer.read_ack()
        await peer.send_event(ev.TEXT_INPUT, {"text": "tell me a long story"})
        while (await peer.receive_event())["eventType"] != ev.OUTPUT_CHUNK:
            pass
        await trio.sleep(STALL_S)  # the fault itself: not reading
        if peer.session_id in stack.app.sessions:
            stats.hostile_not_cut["slow_reader"] += 1
        with trio.move_on_after(10):
            await peer.wait_closed()


async def oversize_peer(stack: Stack, stats: Stats) -> None:
    """Declares a 64 MiB frame, sends 8 MiB of it, ignores the close for IGNORE_CLOSE_S."""
    async with RawWebSocket.connect(stack.ws_url, rcvbuf=4096) as peer:
        await peer.read_ack()
        with contextlib.suppress(trio.BrokenResourceError):
            await peer.send_raw(frame_header(OP_BINARY, OVERSIZE, mask=b"\x01\x02\x03\x04"))
            await peer.send_raw(PAYLOAD)
        await trio.sleep(IGNORE_CLOSE_S)  # the fault itself: not reading the close
        if peer.session_id in stack.app.sessions:
            stats.hostile_not_cut["oversize_peer"] += 1
        with trio.move_on_after(10), contextlib.suppress(ServerClosed):
            await peer.wait_closed()


HOSTILE = {"slow_reader": slow_reader, "oversize_peer": oversize_peer}


def _openai_429(s: Stack) -> None:
    s.openai.fail_next(429, retry_after=0.2)


def _openai_500(s: Stack) -> None:
    s.openai.fail_next(500)


def _openai_stall(s: Stack) -> None:
    s.openai.stall_next(2.0)


def _cartesia_context_error(s: Stack) -> None:
    s.cartesia.fail_next_context("soak fault", 500)


def _cartesia_drop(s: Stack) -> None:
    s.cartesia.drop_next_connection_after(3)


def _deepgram_drop(s: Stack) -> None:
    s.deepgram.drop_after(0.3)


FAULTS: list[tuple[str, Callable[[Stack], None] | None]] = [
    ("openai_429", _openai_429),
    ("openai_500", _openai_500),
    ("openai_stall", _openai_stall),
    ("cartesia_context_error", _cartesia_context_error),
    ("cartesia_drop", _cartesia_drop),
    ("deepgram_drop", _deepgram_drop),
    ("slow_reader", None),
    ("oversize_peer", None),
]
"""Provider faults flip a switch on a fake; hostile callers (None) run as callers."""


async def inject_faults(
    stack: Stack, stats: Stats, every: float, stop_at: float, callers: trio.Nursery
) -> None:
    for name, fault in itertools.cycle(FAULTS):
        await trio.sleep(every)
        if trio.current_time() >= stop_at:
            return
        if fault is None:
            callers.start_soon(hostile_caller, stack, stats, name)
        else:
            fault(stack)
        stats.faults[name] += 1


async def hostile_caller(stack: Stack, stats: Stats, name: str) -> None:
    try:
        with trio.fail_after(SESSION_TIMEOUT):
            await HOSTILE[name](stack, stats)
    except trio.TooSlowError:
        stats.hung += 1
    except Exception as exc:  # recorded, and the soak goes on
        stats.failures[f"{name}: {type(exc).__name__}"] += 1


def count_tasks() -> tuple[int, int]:
    """(all trio tasks, tasks running Vantum server code — not fakes or this script)."""

    def walk(task: trio.lowlevel.Task) -> tuple[int, int]:
        mine = task.name.startswith("vantum.") and not task.name.startswith("vantum.testing")
        total, ours = 1, int(mine)
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                t, o = walk(child)
                total, ours = total + t, ours + o
        return total, ours

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


def task_names() -> collections.Counter[str]:
    names: collections.Counter[str] = collections.Counter()

    def walk(task: trio.lowlevel.Task) -> None:
        names[task.name] += 1
        for nursery in task.child_nurseries:
            for child in nursery.child_tasks:
                walk(child)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    walk(root)
    return names


def clear_recordings(stack: Stack) -> None:
    """The fakes keep everything for test assertions; a soak must not count that as a leak."""
    stack.openai.requests.clear()
    stack.openai.statuses.clear()
    stack.cartesia.cancels.clear()
    stack.cartesia.completed.clear()
    stack.cartesia.errors_sent.clear()
    stack.cartesia.rejected.clear()
    stack.cartesia.requests.clear()
    stack.cartesia.audio_seconds.clear()
    stack.deepgram.query_params.clear()
    stack.deepgram.close_codes.clear()
    stack.deepgram.rejected.clear()


def sample(stack: Stack, stats: Stats, t0: float) -> dict[str, Any]:
    clear_recordings(stack)
    tasks, ours = count_tasks()
    return {
        "t_s": round(trio.current_time() - t0, 1),
        "rss_mib": round(psutil.Process().memory_info().rss / 2**20, 1),
        "sessions_open": len(stack.app.sessions),
        "callers_active": stats.active,
        "tasks": tasks,
        "vantum_tasks": ours,
        "gc_objects": len(gc.get_objects()),
        "sessions_done": stats.sessions,
        "turns": sum(stats.turns.values()),
        "hung": stats.hung,
    }


async def sampler(stack: Stack, stats: Stats, every: float, out: list[dict[str, Any]]) -> None:
    t0 = trio.current_time()
    while True:
        out.append(sample(stack, stats, t0))
        row = out[-1]
        print(
            f"{row['t_s']:>7.0f}s  rss {row['rss_mib']:>6.1f} MiB  open {row['sessions_open']:>3}"
            f"  tasks {row['tasks']:>5} (vantum {row['vantum_tasks']:>4})"
            f"  sessions {row['sessions_done']:>6}  turns {row['turns']:>6}  hung {row['hung']}",
            flush=True,
        )
        await trio.sleep(every)


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    if len(points) < 2:
        return 0.0
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var * 3600


async def soak(args: argparse.Namespace, errors: ErrorLogCounter) -> dict[str, Any]:
    stats, samples = Stats(), list[dict[str, Any]]()
    rng = random.Random(args.seed)
    records = Path(tempfile.mkdtemp(prefix="vantum-soak-")) / "calls.db"
    async with (
        open_store(f"sqlite:///{records}") as store,
        open_stack(deepgram=DG, openai=OA, cartesia=CA, max_sessions=10_000) as stack,
    ):
        stack.app.store = store  # calls are recorded, as `vantum serve` does by default
        # Warm up (imports, pools), then take the idle baseline.
        await one_session(stack.ws_url, random.Random(0), Stats())
        await stack.app.wait_idle()
        gc.collect()
        baseline_tasks, baseline_names = count_tasks(), task_names()
        duration = args.minutes * 60
        stop_at = trio.current_time() + duration
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler, stack, stats, args.sample_every, samples)
            async with trio.open_nursery() as callers:
                callers.start_soon(inject_faults, stack, stats, args.fault_every, stop_at, callers)
                for _ in range(args.concurrency):
                    callers.start_soon(caller, stack, random.Random(rng.random()), stats, stop_at)
            with trio.move_on_after(15):
                await stack.app.wait_idle()
            gc.collect()
            samples.append(sample(stack, stats, stop_at - duration))
            nursery.cancel_scope.cancel()
        end_tasks, extra_tasks = count_tasks(), task_names() - baseline_names
        stuck = len(stack.app.sessions)
        cut = {
            s.labels["reason"]: int(s.value)
            for metric in stack.app.metrics.sessions_cut.collect()
            for s in metric.samples
            if s.name.endswith("_total")
        }
    recorded = records_summary(records)
    shutil.rmtree(records.parent)  # a 30-minute run leaves ~30 MB of records behind
    warm = [s for s in samples if s["t_s"] >= min(duration * 0.2, 60)] or samples
    rss = [s["rss_mib"] for s in warm]
    return {
        "config": {
            "minutes": args.minutes,
            "concurrency": args.concurrency,
            "fault_every_s": args.fault_every,
            "sample_every_s": args.sample_every,
            "seed": args.seed,
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "summary": {
            "sessions": stats.sessions,
            "turns": dict(stats.turns),
            "error_events": dict(stats.errors),
            "faults_injected": dict(stats.faults),
            "caller_failures": dict(stats.failures),
            "hung_sessions": stats.hung,
            "sessions_cut": cut,
            "hostile_not_cut": dict(stats.hostile_not_cut),
            "stalled_turns": stats.turns["stalled"] + stats.turns["barged_stalled"],
            "sessions_left_open": stuck,
            "error_log_records": dict(errors.count),
            "tasks_idle_before": {"all": baseline_tasks[0], "vantum": baseline_tasks[1]},
            "tasks_idle_after": {"all": end_tasks[0], "vantum": end_tasks[1]},
            "tasks_idle_extra": dict(extra_tasks),
            "rss_after_warmup_mib": rss[0],
            "rss_end_mib": rss[-1],
            "rss_max_mib": max(rss),
            "rss_slope_mib_per_hour": round(
                slope_per_hour([(s["t_s"], s["rss_mib"]) for s in warm]), 2
            ),
            **recorded,
        },
        "samples": samples,
    }


def records_summary(path: Path) -> dict[str, int]:
    """What the call store holds once the server has stopped (every call, closed)."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        calls, unfinished = db.execute(
            "SELECT COUNT(*), COUNT(*) - COUNT(ended_at) FROM vantum_calls"
        ).fetchone()
        events = db.execute("SELECT COUNT(*) FROM vantum_call_events").fetchone()[0]
        dropped = db.execute(
            "SELECT COUNT(*) FROM vantum_call_events WHERE kind = ?", (DROPPED_KIND,)
        ).fetchone()[0]
    return {
        "calls_recorded": calls,
        "calls_recorded_unfinished": unfinished,
        "record_events": events,
        "record_drop_notes": dropped,
    }


def verdict(summary: dict[str, Any]) -> list[str]:
    problems = []
    if summary["calls_recorded"] < summary["sessions"]:
        problems.append("fewer calls recorded than sessions completed")
    if summary["calls_recorded_unfinished"] or summary["record_drop_notes"]:
        problems.append("call records left open or events dropped")
    if summary["hung_sessions"] or summary["stalled_turns"]:
        problems.append("hung sessions or stalled turns")
    if summary["caller_failures"]:
        problems.append("callers failed")
    hostile = {
        "slow_reader": summary["faults_injected"].get("slow_reader", 0),
        "oversize": summary["faults_injected"].get("oversize_peer", 0),
    }
    if summary["hostile_not_cut"] or summary["sessions_cut"] != {
        k: v for k, v in hostile.items() if v
    }:
        problems.append("the server did not cut exactly the hostile callers")
    if summary["error_log_records"]:
        problems.append("ERROR records in the server log")
    if summary["sessions_left_open"]:
        problems.append("sessions left open after the callers left")
    if summary["tasks_idle_after"]["vantum"] != summary["tasks_idle_before"]["vantum"]:
        problems.append("Vantum task count did not return to its idle baseline")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--quick", action="store_true", help="1 minute")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--fault-every", type=float, default=5.0, help="seconds between faults")
    parser.add_argument("--sample-every", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parent / "results" / "soak.json"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.minutes = 1.0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    errors = ErrorLogCounter()
    logging.getLogger().addHandler(errors)
    report = trio.run(soak, args, errors)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    summary = report["summary"]
    print()
    for key, value in summary.items():
        print(f"{key:<26} {value}")
    problems = verdict(summary)
    print(f"\n{'FAIL: ' + '; '.join(problems) if problems else 'PASS'}  (report: {args.out})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
