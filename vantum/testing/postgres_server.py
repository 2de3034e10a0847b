"""A throwaway PostgreSQL on a loopback port, for tests: ``initdb`` into a temporary
directory, ``postgres`` started as this test's child and stopped by its PID
(``scripts/install-services.sh`` installs Debian's ``postgresql``).

PostgreSQL refuses to run as root; as root (CI) the cluster is created and run as
the ``postgres`` system user the package creates (Popen's ``user``/``group``).
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

READY = b"database system is ready to accept connections"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (run scripts/install-services.sh)."""


def postgres_bin() -> Path | None:
    """The newest installed server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _as_owner() -> dict[str, Any]:
    """Popen's arguments to run as the ``postgres`` user when we are root."""
    if os.geteuid() != 0:
        return {}
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def run_postgres() -> AsyncIterator[str]:
    """Yield the DSN of a fresh server (user ``vantum``, trust auth on loopback); its
    directory (its own, so the ``postgres`` user can reach it) is removed after."""
    bindir = postgres_bin()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL is not installed (scripts/install-services.sh)")
    owner = _as_owner()
    home = Path(tempfile.mkdtemp(prefix="vantum-pg-"))
    try:
        if owner:
            shutil.chown(home, "postgres", "postgres")
        async with _serve(bindir, owner, home) as dsn:
            yield dsn
    finally:
        shutil.rmtree(home)


@asynccontextmanager
async def _serve(bindir: Path, owner: dict[str, Any], home: Path) -> AsyncIterator[str]:
    data = home / "data"
    await trio.run_process(
        [
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "vantum",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        ],
        capture_stdout=True,
        capture_stderr=True,
        **owner,
    )
    port = _free_port()
    process = await trio.lowlevel.open_process(
        [
            str(bindir / "postgres"),
            "-D",
            str(data),
            "-p",
            str(port),
            "-k",
            str(home),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        **owner,
    )
    try:
        assert process.stderr is not None
        log = b""
        with trio.fail_after(30):
            async for chunk in process.stderr:
                log += chunk
                if READY in log:
                    break
            else:
                raise PostgresUnavailable(f"postgres exited: {log.decode(errors='replace')}")
        async with trio.open_nursery() as nursery:
            # Keep reading its log so a chatty server never blocks on a full pipe.
            nursery.start_soon(_drain, process.stderr)
            yield f"postgresql://vantum@127.0.0.1:{port}/postgres"
            nursery.cancel_scope.cancel()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)  # fast shutdown
            with trio.move_on_after(10) as waited, trio.CancelScope(shield=True):
                await process.wait()
            if waited.cancelled_caught:
                process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()


async def _drain(stream: trio.abc.ReceiveStream) -> None:
    async for _ in stream:
        pass
