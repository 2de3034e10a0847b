"""What the required serving stack costs per message with no Vantum code at all.

The replay benchmark's throughput targets (>= 300 real-time sessions per core)
leave 1/300 of a core, 3.3 ms of CPU per second, for everything one call does.
This measures the floor under that: a Hypercorn trio-worker ASGI app (the stack
Vantum must use) that accepts WebSockets, throws every received message away
and sends paced binary messages back, driven by a load generator in another
process on the other core. Whatever Vantum does per call comes on top.

Modes (``--mode``), per session:

* ``in``: the caller's microphone, one 640-byte frame (20 ms of 16 kHz PCM16)
  every 20 ms, nothing sent back.
* ``out``: the answer, one 1280-byte frame (40 ms) every 40 ms, nothing received.
* ``both``: both at once.

Prints server CPU per session-second, the cost per message, and how many
sessions one core could carry on the stack alone; ``--json`` writes the same.
``--guarded`` serves through ``vantum.server.connections.serve_guarded`` (write
deadlines, frames checked as they arrive) instead of ``hypercorn.trio.serve``, to
price the guard.

    python benchmarks/stack_floor.py --sessions 100 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Any

IN_FRAME = b"\x01\x00" * 320  # 20 ms of 16 kHz PCM16
OUT_FRAME = b"\x02\x00" * 640  # 40 ms
IN_PERIOD = 0.02
OUT_PERIOD = 0.04


# ----------------------------------------------------------------- the server


async def asgi_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Accept, discard what arrives, and (mode out/both) send paced frames."""
    import trio

    from vantum.asgi import serve_lifespan

    if scope["type"] == "lifespan":
        await serve_lifespan(receive, send)
        return
    if scope["type"] != "websocket":
        return
    await receive()  # websocket.connect
    await send({"type": "websocket.accept"})
    mode = os.environ["FLOOR_MODE"]

    async def sender() -> None:
        start = trio.current_time()
        n = 0
        while True:
            n += 1
            await trio.sleep_until(start + n * OUT_PERIOD)
            await send({"type": "websocket.send", "bytes": OUT_FRAME})

    async with trio.open_nursery() as nursery:
        if mode in ("out", "both"):
            nursery.start_soon(sender)
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                nursery.cancel_scope.cancel()
                return


def run_server(port: int, guarded: bool) -> None:
    from functools import partial

    import trio
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from vantum.server.connections import ConnectionTable, GuardLimits, serve_guarded

    os.sched_setaffinity(0, {0})
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    if guarded:
        limits = GuardLimits(write_timeout=2.0, max_message=1 << 20)
        config.websocket_max_message_size = limits.max_message
        trio.run(
            partial(
                serve_guarded,
                asgi_app,
                config,
                limits,
                ConnectionTable(),
                shutdown_trigger=trio.sleep_forever,
            )
        )
    else:
        trio.run(serve, asgi_app, config)  # type: ignore[arg-type]


# ----------------------------------------------------------------- the load


async def drive(url: str, sessions: int, seconds: float, mode: str) -> dict[str, float]:
    import trio
    from trio_websocket import open_websocket_url

    opened = 0
    counted = {"sent": 0, "received": 0}
    """Messages moved while the measurement window is open (the server's real load)."""
    window_open = False
    all_open = trio.Event()
    done = trio.Event()

    async def one(index: int) -> None:
        nonlocal opened
        async with open_websocket_url(url) as ws:
            opened += 1
            if opened == sessions:
                all_open.set()

            async def talk() -> None:
                start = trio.current_time() + (index % 50) * IN_PERIOD / 50
                n = 0
                while True:
                    n += 1
                    await trio.sleep_until(start + n * IN_PERIOD)
                    await ws.send_message(IN_FRAME)
                    if window_open:
                        counted["sent"] += 1

            async def listen() -> None:
                while True:
                    await ws.get_message()
                    if window_open:
                        counted["received"] += 1

            async with trio.open_nursery() as nursery:
                if mode in ("in", "both"):
                    nursery.start_soon(talk)
                nursery.start_soon(listen)
                await done.wait()
                nursery.cancel_scope.cancel()

    results: dict[str, float] = {}

    async def measure(server_pid: int) -> None:
        import psutil

        nonlocal window_open
        proc = psutil.Process(server_pid)
        await all_open.wait()
        await trio.sleep(2.0)  # let the connection burst settle before measuring
        c0, w0 = sum(proc.cpu_times()[:2]), time.monotonic()
        window_open = True
        await trio.sleep(seconds)
        window_open = False
        c1, w1 = sum(proc.cpu_times()[:2]), time.monotonic()
        results["server_core_busy"] = (c1 - c0) / (w1 - w0)
        results["messages_per_s"] = (counted["sent"] + counted["received"]) / (w1 - w0)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(measure, int(os.environ["FLOOR_SERVER_PID"]))
        for i in range(sessions):
            nursery.start_soon(one, i)
    return results


def _wait_listening(port: int, server: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until the server accepts connections (a busy machine starts it slowly)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the stack server exited with {server.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)  # polling a port, not synchronising with our own code
    raise SystemExit(f"the stack server did not listen on {port} within {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--modes", default="in,out,both")
    parser.add_argument("--port", type=int, default=18765)
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--guarded", action="store_true", help="serve as vantum serve does")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        run_server(args.port, args.guarded)
        return

    import trio

    rows = []
    for mode in args.modes.split(","):
        env = {**os.environ, "FLOOR_MODE": mode}
        command = [sys.executable, __file__, "--serve", "--port", str(args.port)]
        server = subprocess.Popen([*command, *(["--guarded"] if args.guarded else [])], env=env)
        try:
            _wait_listening(args.port, server)
            os.sched_setaffinity(0, {1})
            os.environ["FLOOR_SERVER_PID"] = str(server.pid)
            url = f"ws://127.0.0.1:{args.port}/"
            print(f"mode {mode}: {args.sessions} sessions for {args.seconds:.0f} s ...", flush=True)
            got = trio.run(drive, url, args.sessions, args.seconds, mode)
        finally:
            server.terminate()
            server.wait()
        per_s = {"in": 1 / IN_PERIOD, "out": 1 / OUT_PERIOD, "both": 1 / IN_PERIOD + 1 / OUT_PERIOD}
        busy = got["server_core_busy"]
        ms_per_session_s = busy / args.sessions * 1000
        rows.append(
            {
                "mode": mode,
                "sessions": args.sessions,
                "server_core_busy": round(busy, 3),
                "server_cpu_ms_per_session_second": round(ms_per_session_s, 3),
                "nominal_messages_per_s": per_s[mode] * args.sessions,
                "messages_per_s": round(got["messages_per_s"]),
                "server_cpu_us_per_message": round(busy * 1e6 / got["messages_per_s"], 1),
                "sessions_per_core_on_the_stack_alone": int(1000 / ms_per_session_s),
            }
        )
    print()
    head = ("mode", "N", "msgs/s", "core busy", "ms/session-s", "us/msg", "sessions/core")
    print(
        f"{head[0]:<6}{head[1]:>5}{head[2]:>8}{head[3]:>11}{head[4]:>14}{head[5]:>9}{head[6]:>15}"
    )
    for r in rows:
        print(
            f"{r['mode']:<6}{r['sessions']:>5}{r['messages_per_s']:>8}{r['server_core_busy']:>11.0%}"
            f"{r['server_cpu_ms_per_session_second']:>14.2f}{r['server_cpu_us_per_message']:>9.1f}"
            f"{r['sessions_per_core_on_the_stack_alone']:>15}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine_cores": os.cpu_count(), "rows": rows}, f, indent=2)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
