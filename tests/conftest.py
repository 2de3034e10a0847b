"""Suite-wide test setup.

The VAD: the pipeline and end-to-end tests feed it synthetic audio (``tone``,
``speech_like``: a harmonic buzz whose loudness is known) that an energy VAD hears
as speech and a neural one, rightly, does not. They pin the WebRTC VAD, whose
timing they were written against; the Silero path has its own tests on real
(eSpeak) speech, which choose it explicitly (``CallSettings(vad="silero")``).

PostgreSQL: ``postgres_dsn`` is a real, throwaway server for the Postgres call store.
It uses ``VANTUM_TEST_POSTGRES_DSN`` when set; otherwise it starts a
private cluster for the test session (``vantum.testing.postgres_server``: initdb +
pg_ctl on 127.0.0.1 and a free port, as the ``postgres`` user when run as root), and
stops it at the end. Without a
PostgreSQL installed, the tests that need it are skipped and say why.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from vantum.testing.postgres_server import PostgresUnavailable, postgres_server

os.environ["VANTUM_VAD"] = "webrtc"


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    dsn = os.environ.get("VANTUM_TEST_POSTGRES_DSN")
    if dsn:
        yield dsn
        return
    pytest.importorskip("psycopg")
    try:
        with postgres_server() as started:
            yield started
    except PostgresUnavailable as exc:
        pytest.skip(f"{exc}; or set VANTUM_TEST_POSTGRES_DSN")
