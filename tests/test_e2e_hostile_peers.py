"""Peers that break the WebSocket contract, over real sockets on 127.0.0.1: one that
stops reading. It must end its own session on time, be counted and recorded, and the
call's maximum duration must hold whatever it does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, LONG_OA, SMALL_RCVBUF, stop_reading_mid_answer

from vantum.config import Config
from vantum.errors import ConfigError
from vantum.records import CallStore, open_store
from vantum.testing.raw_ws import RawWebSocket
from vantum.testing.stack import Stack, open_stack


@contextlib.asynccontextmanager
async def recorded_stack(
    tmp_path: Path, **config: object
) -> AsyncIterator[tuple[Stack, CallStore]]:
    # The store outlives the server, so sessions still closing can record their end.
    async with (
        open_store(f"sqlite:///{tmp_path / 'calls.db'}") as store,
        open_stack(deepgram=FAST_DG, openai=LONG_OA, cartesia=FAST_CA, **config) as stack,
    ):
        stack.app.store = store
        yield stack, store


def cut_count(stack: Stack, reason: str) -> float:
    value = stack.app.metrics.registry.get_sample_value(
        "vantum_sessions_cut_total", {"reason": reason}
    )
    return value or 0.0


async def open_sessions(stack: Stack) -> int:
    async with httpx.AsyncClient() as http:
        health = (await http.get(f"{stack.url}/health")).json()
    sessions: int = health["sessions"]
    return sessions


async def test_a_peer_that_stops_reading_is_cut_after_the_write_timeout(tmp_path: Path) -> None:
    async with recorded_stack(tmp_path, write_timeout_ms=1000) as (stack, store):
        async with RawWebSocket.connect(stack.ws_url, rcvbuf=SMALL_RCVBUF) as peer:
            await stop_reading_mid_answer(peer)
            sid = peer.session_id
            stopped_at = trio.current_time()
            # The socket buffers fill within a second of answer audio; the first write
            # that then waits 1 s for room ends the session.
            with trio.fail_after(10):
                await stack.app.wait_idle()
            took = trio.current_time() - stopped_at
            assert await open_sessions(stack) == 0
        assert cut_count(stack, "slow_reader") == 1
    async with open_store(f"sqlite:///{tmp_path / 'calls.db'}") as store:
        record = await store.get_call(sid)
    assert record is not None and record.summary.outcome == "slow_reader"
    print(f"slow reader cut {took:.2f} s after it stopped reading (write timeout 1 s)")


async def test_a_call_whose_peer_stops_reading_still_ends_at_the_maximum_duration(
    tmp_path: Path,
) -> None:
    max_call_s = 3.0
    # A write timeout far beyond the call limit, so only the call limit can end it.
    async with recorded_stack(tmp_path, max_call_s=max_call_s, write_timeout_ms=60_000) as (
        stack,
        _,
    ):
        async with RawWebSocket.connect(stack.ws_url, rcvbuf=SMALL_RCVBUF) as peer:
            connected_at = trio.current_time()
            await stop_reading_mid_answer(peer)
            with trio.fail_after(max_call_s + 5):
                await stack.app.wait_idle()
            took = trio.current_time() - connected_at
        assert took < max_call_s + 1.5, took
        assert cut_count(stack, "max_duration") == 1
    print(f"call with a non-reading peer ended {took:.2f} s after it began (limit {max_call_s} s)")


def test_the_write_timeout_setting() -> None:
    assert Config().write_timeout_ms == 2000
    assert Config.from_env({"VANTUM_WRITE_TIMEOUT_MS": "750"}).write_timeout_ms == 750
    with pytest.raises(ConfigError, match="VANTUM_WRITE_TIMEOUT_MS=50: use 100 or more"):
        Config.from_env({"VANTUM_WRITE_TIMEOUT_MS": "50"})
