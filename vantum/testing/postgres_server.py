"""A throwaway PostgreSQL on a loopback port, for tests: ``initdb`` into a temporary
directory, started and stopped with ``pg_ctl`` (``scripts/install-services.sh``
installs Debian's ``postgresql``). One implementation serves both kinds of caller:
:func:`postgres_server` for synchronous code (the suite's session fixture) and
:func:`run_postgres` inside trio (it runs the same start and stop in a thread).

PostgreSQL refuses to run as root; as root (CI) the cluster is created and run as
the ``postgres`` system user the package creates (Popen's ``user``/``group``).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import trio


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server binaries (run scripts/install-services.sh), or no user to
    run them as."""


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
    import pwd

    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PostgresUnavailable(
            "running as root and there is no 'postgres' user to run PostgreSQL"
        ) from None
    return {"user": "postgres", "group": "postgres", "extra_groups": []}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yield the DSN of a fresh server (user ``vantum``, trust auth on loopback,
    ``fsync=off``); it is stopped and its directory (its own, so the ``postgres``
    user can reach it) removed after."""
    bindir = postgres_bin()
    if bindir is None:
        raise PostgresUnavailable("PostgreSQL is not installed (scripts/install-services.sh)")
    owner = _as_owner()
    home = Path(tempfile.mkdtemp(prefix="vantum-pg-"))
    data, port = home / "data", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run(args, capture_output=True, **owner)
        if done.returncode != 0:
            raise PostgresUnavailable(
                f"{Path(args[0]).name} failed: {done.stderr.decode(errors='replace')}"
            )

    try:
        if owner:
            shutil.chown(home, "postgres", "postgres")
        run(
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "vantum",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        options = f"-p {port} -k {home} -c listen_addresses=127.0.0.1 -c fsync=off"
        # -w: pg_ctl itself waits until the server accepts connections.
        run(
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-l",
            str(home / "log"),
            "-w",
            "start",
        )
        try:
            yield f"postgresql://vantum@127.0.0.1:{port}/postgres"
        finally:
            # Not checked: a failed stop must not hide what the body raised.
            subprocess.run(
                [str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                capture_output=True,
                **owner,
            )
    finally:
        shutil.rmtree(home, ignore_errors=True)


@asynccontextmanager
async def run_postgres() -> AsyncIterator[str]:
    """:func:`postgres_server` for trio code: start and stop block (initdb and pg_ctl
    take a second or two), so they run in a worker thread."""
    server = postgres_server()
    dsn = await trio.to_thread.run_sync(server.__enter__)
    try:
        yield dsn
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(server.__exit__, None, None, None)
