"""SIGTERM against a real ``vantum serve`` process: it exits on time whatever its peers do.

The server runs as its own process (the CLI, as deployed) against the fake providers
in this one. Two callers with valid tokens ask for a long answer and stop reading, so
the server's writes to them block; the process must still be gone within
``VANTUM_GRACEFUL_TIMEOUT`` + 1 s of the signal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio
from e2e_helpers import FAST_CA, FAST_DG, LONG_OA, SMALL_RCVBUF, stop_reading_mid_answer

from vantum.server.auth import issue_token, load_secret, new_secret
from vantum.testing.fake_cartesia import serve_fake_cartesia
from vantum.testing.fake_deepgram import serve_fake_deepgram
from vantum.testing.fake_openai import serve_fake_openai
from vantum.testing.raw_ws import RawWebSocket

GRACEFUL_S = 2.0


async def test_sigterm_exits_within_the_graceful_timeout_though_peers_stopped_reading(
    tmp_path: Path,
) -> None:
    secret = new_secret()
    async with (
        serve_fake_deepgram(FAST_DG) as dg,
        serve_fake_openai(LONG_OA) as oa,
        serve_fake_cartesia(FAST_CA) as ca,
    ):
        env = {
            **os.environ,
            "DEEPGRAM_API_KEY": dg.api_key,
            "DEEPGRAM_URL": dg.url,
            "OPENAI_API_KEY": oa.api_key,
            "OPENAI_BASE_URL": oa.base_url,
            "CARTESIA_API_KEY": ca.api_key,
            "CARTESIA_URL": ca.url,
            "VANTUM_HOST": "127.0.0.1",
            "VANTUM_PORT": "0",
            "VANTUM_AUTH_SECRET": secret,
            "VANTUM_RECORDS_URL": f"sqlite:///{tmp_path / 'calls.db'}",
            "VANTUM_GRACEFUL_TIMEOUT": str(GRACEFUL_S),
            # Far longer than the drain, so only the drain's own deadline can end the calls.
            "VANTUM_WRITE_TIMEOUT_MS": "60000",
            "VANTUM_LOG_LEVEL": "INFO",
            # One process (with every stage on a provider the default is one worker per
            # core); the drain of several workers is tests/test_workers.py's.
            "VANTUM_WORKERS": "1",
        }
        command = [
            sys.executable,
            "-c",
            "import sys; from vantum.cli import main; sys.exit(main())",
        ]
        process = await trio.lowlevel.open_process(
            [*command, "serve"], env=env, stderr=subprocess.PIPE
        )
        assert process.stderr is not None
        log: list[str] = []
        listening = trio.Event()

        async def read_log() -> None:
            assert process.stderr is not None
            buffer = b""
            async for chunk in process.stderr:
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    log.append(line.decode(errors="replace"))
                    if "Vantum listening on" in log[-1]:
                        listening.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_log)
                with trio.fail_after(30):
                    await listening.wait()
                match = re.search(r"listening on (http://\S+)", "\n".join(log))
                assert match is not None
                ws_url = match.group(1).replace("http://", "ws://") + "/ws"
                async with httpx.AsyncClient() as http:
                    metrics = (await http.get(match.group(1) + "/metrics")).text
                # The start-up heap is frozen out of the collector's full passes.
                frozen = re.search(r"^vantum_gc_frozen_objects (\S+)$", metrics, re.M)
                assert frozen is not None and float(frozen.group(1)) > 10_000
                token = issue_token(
                    load_secret(secret), subject="test", audience="ws", ttl_s=60, now=time.time()
                )
                async with (
                    RawWebSocket.connect(ws_url, rcvbuf=SMALL_RCVBUF, token=token) as a,
                    RawWebSocket.connect(ws_url, rcvbuf=SMALL_RCVBUF, token=token) as b,
                ):
                    with trio.fail_after(10):
                        await stop_reading_mid_answer(a)
                        await stop_reading_mid_answer(b)
                    signalled_at = trio.current_time()
                    process.send_signal(signal.SIGTERM)
                    with trio.fail_after(GRACEFUL_S + 10):
                        await process.wait()
                    took = trio.current_time() - signalled_at
                nursery.cancel_scope.cancel()
        finally:
            if process.returncode is None:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
            print("\n".join(log[-15:]))
    print(f"SIGTERM -> exit in {took:.2f} s (VANTUM_GRACEFUL_TIMEOUT={GRACEFUL_S})")
    assert any("draining 2 session(s)" in line for line in log)
    assert process.returncode == 0
    assert took < GRACEFUL_S + 1.0, took
