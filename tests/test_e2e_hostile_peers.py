"""Peers that break the WebSocket contract, over real sockets on 127.0.0.1: one that
stops reading, one that sends a frame over the limit and ignores the close, one that
sends text that is not UTF-8 or a frame no RFC 6455 peer may send. Each must end its
own session on time, be told why with a close frame where one can still reach it,
be counted and recorded, and cost nothing once it is gone."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, LONG_OA, SMALL_RCVBUF, stop_reading_mid_answer
from wsproto.events import BytesMessage

from vantum.config import Config
from vantum.errors import ConfigError
from vantum.protocol import events as ev
from vantum.records import CallStore, open_store
from vantum.testing.raw_ws import OP_BINARY, OP_TEXT, RawWebSocket, client_frame, frame_header
from vantum.testing.stack import Stack, open_stack


@contextlib.asynccontextmanager
async def recorded_stack(tmp_path: Path, **config: Any) -> AsyncIterator[tuple[Stack, CallStore]]:
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


def rss_mib() -> float:
    gc.collect()
    return float(psutil.Process().memory_info().rss) / 2**20


def reset_peak_rss() -> None:
    """Start measuring the process's peak RSS (VmHWM) afresh (Linux: clear_refs 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    (line,) = [x for x in status.splitlines() if x.startswith("VmHWM:")]
    return int(line.split()[1]) / 1024


async def test_oversize_frames_from_peers_that_ignore_the_close_end_and_free_memory(
    tmp_path: Path,
) -> None:
    # Each frame is larger than Hypercorn's old 64 MiB backstop, and each peer keeps its
    # TCP connection open without ever reading the server's close frame.
    size = 66 << 20
    payload = memoryview(bytes(size))
    async with recorded_stack(tmp_path) as (stack, _):
        async with contextlib.AsyncExitStack() as peers_open:
            peers = [
                await peers_open.enter_async_context(
                    RawWebSocket.connect(stack.ws_url, rcvbuf=SMALL_RCVBUF)
                )
                for _ in range(4)
            ]
            for peer in peers:
                await peer.read_ack()
            assert await open_sessions(stack) == 4
            rss_before = rss_mib()
            reset_peak_rss()
            sent_at = trio.current_time()

            async def send_oversize(peer: RawWebSocket) -> None:
                mask = b"\x01\x02\x03\x04"  # zeros masked: the server sees bytes, not zeros
                with contextlib.suppress(trio.BrokenResourceError):
                    await peer.send_raw(frame_header(OP_BINARY, size, mask=mask))
                    await peer.send_raw(payload)

            async with trio.open_nursery() as nursery:
                for peer in peers:
                    nursery.start_soon(send_oversize, peer)
                with trio.fail_after(5):
                    await stack.app.wait_idle()
                took = trio.current_time() - sent_at
                assert await open_sessions(stack) == 0
                rss_after, peak = rss_mib(), peak_rss_mib()
        assert cut_count(stack, "oversize") == 4
    print(
        f"4 oversize peers: sessions over {took:.2f} s after the frames, "
        f"RSS {rss_before:.1f} -> {rss_after:.1f} MiB (peak {peak:.1f})"
    )
    assert peak - rss_before < 32, (rss_before, peak)
    assert rss_after - rss_before < 16, (rss_before, rss_after)


async def test_an_oversize_frame_is_refused_from_its_header_with_1009(tmp_path: Path) -> None:
    async with recorded_stack(tmp_path, max_frame_bytes=64 * 1024) as (stack, _):
        async with RawWebSocket.connect(stack.ws_url) as peer:
            await peer.read_ack()
            # Only the header: the server must not wait for the payload to decide.
            await peer.send_raw(frame_header(OP_BINARY, 64 * 1024 + 1, mask=b"abcd"))
            with trio.fail_after(5):
                closed = await peer.wait_closed()
        assert closed.code == ev.CLOSE_TOO_BIG, closed
        assert cut_count(stack, "oversize") == 1


async def test_a_text_frame_that_is_not_utf8_is_closed_with_1007(tmp_path: Path) -> None:
    async with recorded_stack(tmp_path) as (stack, _):
        async with RawWebSocket.connect(stack.ws_url) as peer:
            await peer.read_ack()
            sid = peer.session_id
            await peer.send_raw(client_frame(OP_TEXT, b"caf\xc3 \xff\xfe"))
            with trio.fail_after(5):
                closed = await peer.wait_closed()
                await stack.app.wait_idle()
        assert closed.code == 1007, closed
        assert cut_count(stack, "bad_frame") == 1
    async with open_store(f"sqlite:///{tmp_path / 'calls.db'}") as store:
        record = await store.get_call(sid)
    assert record is not None and record.summary.outcome == "bad_frame"


async def test_a_frame_no_peer_may_send_is_closed_with_1002(tmp_path: Path) -> None:
    async with recorded_stack(tmp_path) as (stack, _):
        async with RawWebSocket.connect(stack.ws_url) as peer:
            await peer.read_ack()
            await peer.send_raw(client_frame(0x3, b"reserved opcode"))
            with trio.fail_after(5):
                closed = await peer.wait_closed()
                await stack.app.wait_idle()
        assert closed.code == 1002, closed


async def test_compressed_messages_are_bounded_by_what_they_inflate_to(tmp_path: Path) -> None:
    """permessage-deflate (which browsers negotiate): a frame's length says nothing about
    the message it inflates to. A 64 MiB message of zeros is ~64 KiB on the wire."""
    bomb = bytes(64 << 20)
    async with recorded_stack(tmp_path) as (stack, _):
        async with contextlib.AsyncExitStack() as peers_open:
            peers = [
                await peers_open.enter_async_context(
                    RawWebSocket.connect(stack.ws_url, deflate=True)
                )
                for _ in range(4)
            ]
            for peer in peers:
                await peer.read_ack()
            # An ordinary compressed call still works.
            await peers[0].send_event(ev.TEXT_INPUT, {"text": "hello"})
            while (await peers[0].receive_event())["eventType"] != ev.OUTPUT_CHUNK:
                pass
            compressed = [peer.conn.send(BytesMessage(bomb)) for peer in peers]
            rss_before = rss_mib()
            reset_peak_rss()
            for peer, message in zip(peers, compressed, strict=True):
                await peer.send_raw(message)
            with trio.fail_after(5):
                closes = [await peer.wait_closed() for peer in peers]
                await stack.app.wait_idle()
            rss_after, peak = rss_mib(), peak_rss_mib()
        assert [c.code for c in closes] == [ev.CLOSE_TOO_BIG] * 4, closes
        assert cut_count(stack, "oversize") == 4
    print(
        f"4 deflate bombs ({len(compressed[0]) // 1024} KiB inflating to 64 MiB each): "
        f"RSS {rss_before:.1f} -> {rss_after:.1f} MiB (peak {peak:.1f})"
    )
    assert peak - rss_before < 32, (rss_before, peak)


def test_the_write_timeout_setting() -> None:
    assert Config().write_timeout_ms == 2000
    assert Config.from_env({"VANTUM_WRITE_TIMEOUT_MS": "750"}).write_timeout_ms == 750
    with pytest.raises(ConfigError, match="VANTUM_WRITE_TIMEOUT_MS=50: use 100 or more"):
        Config.from_env({"VANTUM_WRITE_TIMEOUT_MS": "50"})
