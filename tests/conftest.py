"""Suite-wide test setup.

The VAD: the pipeline and end-to-end tests feed it synthetic audio (``tone``,
``speech_like``: a harmonic buzz whose loudness is known) that an energy VAD hears
as speech and a neural one, rightly, does not. They pin the WebRTC VAD, whose
timing they were written against; the Silero path has its own tests on real
(eSpeak) speech, which choose it explicitly (``CallSettings(vad="silero")``).

PostgreSQL: ``postgres_dsn`` is a real, throwaway server for the Postgres call store.
It uses ``VANTUM_TEST_POSTGRES_DSN`` when set; otherwise it starts a
private cluster (initdb + pg_ctl from PATH or Debian's /usr/lib/postgresql/*/bin) on
127.0.0.1 and a free port for the test session, as the ``postgres`` user when run as
root (PostgreSQL refuses to run as root), and stops it at the end. Without a
PostgreSQL installed, the tests that need it are skipped and say why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

os.environ["VANTUM_VAD"] = "webrtc"


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    dsn = os.environ.get("VANTUM_TEST_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    pytest.importorskip("psycopg")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        pytest.skip("no PostgreSQL (initdb/pg_ctl) installed; set VANTUM_TEST_POSTGRES_DSN")
    as_user: list[str] = []
    root = tempfile.mkdtemp(prefix="vantum-pg-")
    if os.geteuid() == 0:
        import pwd

        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run PostgreSQL")
        os.chmod(root, 0o755)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data = os.path.join(root, "data")
    port = _free_port()

    def run(*args: str, check: bool = True) -> None:
        subprocess.run(
            [*as_user, *args], check=check, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    run(initdb, "-D", data, "-A", "trust", "-U", "vantum", "--no-sync")
    options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
    run(pg_ctl, "-D", data, "-o", options, "-l", f"{root}/log", "-w", "start")
    try:
        yield f"postgresql://vantum@127.0.0.1:{port}/postgres"
    finally:
        run(pg_ctl, "-D", data, "-m", "immediate", "stop", check=False)
        shutil.rmtree(root, ignore_errors=True)
