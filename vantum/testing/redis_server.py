"""A real ``redis-server`` on a loopback port, for tests: started in a temporary
directory, stopped by its PID (``scripts/install-services.sh`` installs it).

:func:`run_redis` yields a :class:`RedisServer` whose :meth:`~RedisServer.restart`
stops it and starts a fresh one on the same port (nothing persisted), which is how
the tests take Redis away under running calls.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import trio


class RedisUnavailable(RuntimeError):
    """No ``redis-server`` on PATH (run scripts/install-services.sh)."""


def redis_server_path() -> str | None:
    return shutil.which("redis-server")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@attrs.define
class RedisServer:
    port: int
    folder: Path
    process: trio.Process | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> None:
        path = redis_server_path()
        if path is None:
            raise RedisUnavailable("redis-server is not installed (scripts/install-services.sh)")
        self.starts += 1
        command = [
            path,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.folder),
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--logfile",
            "",  # to stdout, read until it says it accepts connections
        ]
        self.process = await trio.lowlevel.open_process(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        log = b""
        with trio.fail_after(10):
            async for chunk in self.process.stdout:
                log += chunk
                if b"Ready to accept connections" in log:
                    break
            else:
                raise RedisUnavailable(f"redis-server exited: {log.decode(errors='replace')}")
        # After start-up redis-server logs a line per save or shutdown at its default
        # level, far less than a pipe holds, so the rest is left unread.

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()
        self.process = None

    async def restart(self) -> None:
        """Stop (SIGKILL: its data is gone, as after a crash) and start again."""
        await self.stop()
        await self.start()


@asynccontextmanager
async def run_redis(folder: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(_free_port(), folder)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()
