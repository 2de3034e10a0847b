"""Graceful shutdown: stop accepting, let calls end, then close the rest with 1001."""

from __future__ import annotations

import pytest
import trio
import trio.testing
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA

from vantum.protocol import events as ev
from vantum.testing.browser_client import BrowserClient
from vantum.testing.stack import open_stack


async def test_drain_refuses_new_calls_and_closes_open_ones_with_1001() -> None:
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stack.app.drain, 0.5)
                await trio.testing.wait_all_tasks_blocked()
                assert stack.app.draining
                # A new caller is told why and turned away.
                refused: list[str] = []
                try:
                    async with BrowserClient.connect(stack.ws_url):
                        pass
                except* RuntimeError as group:
                    refused = [str(e) for e in group.exceptions]
                assert len(refused) == 1 and ev.ERR_SHUTDOWN in refused[0]
                # The open call is closed once the drain deadline passes.
                with trio.fail_after(5), pytest.raises(trio.EndOfChannel):
                    while True:
                        await client.next_event()
            assert client.close_code == ev.CLOSE_GOING_AWAY
        assert stack.app.sessions == {}
