"""Two real workers writing call records into one real PostgreSQL.

Both workers start side by side against an empty database (their schema set-up runs
concurrently), each serves a call, and both calls' records, with the answer each
caller heard, land in PostgreSQL.
"""

from __future__ import annotations

import os
from contextlib import AsyncExitStack

import pytest
import trio
from cluster_helpers import answers, calls_on_both, serve_process
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA

from vantum.records.postgres import open_postgres_store
from vantum.server.auth import new_secret
from vantum.testing.fake_cartesia import serve_fake_cartesia
from vantum.testing.fake_deepgram import serve_fake_deepgram
from vantum.testing.fake_openai import serve_fake_openai
from vantum.testing.postgres_server import postgres_bin, run_postgres

try:
    import psycopg  # noqa: F401

    HAVE_PSYCOPG = True
except ImportError:
    HAVE_PSYCOPG = False

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        postgres_bin() is None or not HAVE_PSYCOPG,
        reason="SKIPPED LOUDLY: PostgreSQL or psycopg is not installed; run "
        "scripts/install-services.sh and pip install -e '.[dev]'",
    ),
]


async def test_records_from_both_workers_land_in_postgresql(tmp_path: os.PathLike[str]) -> None:
    async with (
        run_postgres() as dsn,
        serve_fake_deepgram(FAST_DG) as dg,
        serve_fake_openai(FAST_OA) as oa,
        serve_fake_cartesia(FAST_CA) as ca,
    ):
        env = {
            "DEEPGRAM_API_KEY": dg.api_key,
            "DEEPGRAM_URL": dg.url,
            "OPENAI_API_KEY": oa.api_key,
            "OPENAI_BASE_URL": oa.base_url,
            "CARTESIA_API_KEY": ca.api_key,
            "CARTESIA_URL": ca.url,
            "VANTUM_RECORDS_URL": dsn,
            "VANTUM_GRACEFUL_TIMEOUT": "2",
        }
        calls: dict[int, str] = {}
        async with serve_process(env, new_secret()) as server:
            async with AsyncExitStack() as stack:
                with trio.fail_after(60):
                    by_worker = await calls_on_both(server, stack)
                    for index, placed in by_worker.items():
                        await answers(placed[0])
                        calls[index] = placed[0].session_id
            # The calls are hung up; the drain flushes what is left of their records.
            server.process.terminate()
            with trio.fail_after(30):
                await server.process.wait()
        assert server.process.returncode == 0
        async with open_postgres_store(dsn) as store:
            for call_id in calls.values():
                record = await store.get_call(call_id)
                assert record is not None, call_id
                assert record.summary.ended_at is not None
                assert ("assistant", "") not in record.transcript()
                assert any(speaker == "assistant" for speaker, _ in record.transcript())


async def test_servers_starting_together_create_the_schema_once() -> None:
    """Six stores opening at once on an empty database (workers starting side by side):
    every one opens. Without the schema lock PostgreSQL refuses all but one of the
    concurrent CREATE TABLEs (duplicate key in pg_type)."""
    async with run_postgres() as dsn:
        failures: list[BaseException] = []

        async def open_one() -> None:
            try:
                async with open_postgres_store(dsn):
                    pass
            except Exception as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(open_one)
        assert failures == []
