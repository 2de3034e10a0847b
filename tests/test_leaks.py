"""200 sessions opened, used and closed leave no tasks, channels or memory behind."""

from __future__ import annotations

import gc
import logging
import tracemalloc

import psutil
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG

from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack

TINY_OA = FakeOpenAIConfig(
    first_token_latency=0.0, tokens_per_second=5000, responder=lambda messages: "Okay."
)


def count_vantum_tasks() -> int:
    """Tasks running Vantum's own code (the fakes' idle keep-alive handlers don't count)."""

    def walk(task: trio.lowlevel.Task) -> int:
        mine = task.name.startswith("vantum.") and not task.name.startswith("vantum.testing")
        return int(mine) + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None  # always set inside trio.run
    return walk(root)


def live(kind: type) -> int:
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, kind))


async def use_session(url: str, i: int) -> None:
    # Bounded: a session that never answers fails here, naming itself, instead of hanging
    # the suite (one unexplained hang was seen once under heavy load, before this bound).
    with trio.move_on_after(60) as bound:
        await _one_turn(url, i)
    assert not bound.cancelled_caught, f"session {i} got no answer within 60 s"


async def _one_turn(url: str, i: int) -> None:
    async with BrowserClient.connect(url) as client:
        await client.start(16_000)
        await client.stream_audio(speech_like(0.3, 16_000, seed=i), 16_000, realtime=False)
        if i % 2:
            await client.send(ev.TEXT_INPUT, {"text": f"hello {i}"})
        else:
            await client.end_turn()
        turn = await client.collect_turn()
        assert turn.audio_seconds > 0 and not turn.errors


async def test_200_sessions_leave_nothing_behind(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR)  # captured log records would read as a leak
    async with open_stack(deepgram=FAST_DG, openai=TINY_OA, cartesia=FAST_CA) as stack:

        async def batch(start: int, n: int) -> None:
            limiter = trio.CapacityLimiter(20)

            async def one(i: int) -> None:
                async with limiter:
                    await use_session(stack.ws_url, i)

            async with trio.open_nursery() as nursery:
                for i in range(start, start + n):
                    nursery.start_soon(one, i)
            with trio.fail_after(10):
                await stack.app.wait_idle()

        await batch(0, 40)  # warm up: imports, caches, connection pools
        tasks0, channels0 = count_vantum_tasks(), live(trio.MemorySendChannel)
        rss0 = psutil.Process().memory_info().rss
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        await batch(40, 200)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        rss1 = psutil.Process().memory_info().rss
        tasks1, channels1 = count_vantum_tasks(), live(trio.MemorySendChannel)
        # Python memory still held by Vantum's own code (not the fakes' recordings).
        ours = [
            tracemalloc.Filter(True, "*/vantum/*"),
            tracemalloc.Filter(False, "*/vantum/testing/*"),
        ]
        held = sum(
            d.size_diff
            for d in after.filter_traces(ours).compare_to(before.filter_traces(ours), "filename")
        )
        print(
            f"after 200 more sessions: vantum tasks {tasks0}->{tasks1}, send channels "
            f"{channels0}->{channels1}, Python heap held by vantum {held / 1024:+.1f} KiB, "
            f"process RSS {(rss1 - rss0) / 2**20:+.1f} MiB (includes the fakes' recordings)"
        )
        assert stack.app.sessions == {}
        assert tasks1 == tasks0
        assert channels1 <= channels0
        assert held < 200 * 1024, f"{held / 1024:.0f} KiB still held after 200 sessions"
