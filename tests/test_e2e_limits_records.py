"""Server-level hardening wired end to end: audio rate limit and call records."""

from __future__ import annotations

from pathlib import Path

import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, speak_turn

from vantum.protocol import events as ev
from vantum.records import open_store
from vantum.testing.audio_fixtures import silence
from vantum.testing.browser_client import BrowserClient
from vantum.testing.stack import open_stack


async def test_audio_faster_than_real_time_is_refused_and_session_survives() -> None:
    async with open_stack(
        deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA, audio_rate_margin=1.25
    ) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.start(16_000)
            # 12 s of audio at once: the first 5 s are allowed as a lead, the rest refused.
            await client.stream_audio(silence(12.0, 16_000), 16_000, realtime=False)
            err = await client.expect_error()
            assert err["eventType"] == ev.ERR_RATE
            assert err["requestType"] == ev.INPUT_CHUNK
            # Reported at most every 5 s, not per chunk; the call goes on.
            await client.send(ev.TEXT_INPUT, {"text": "are you there"})
            turn = await client.collect_turn()
            assert {e["eventType"] for e in turn.errors} <= {ev.ERR_RATE}
            assert len(turn.errors) <= 1  # at most one report every 5 s
            assert turn.audio_seconds > 0
        # Every refused chunk is counted, though only one was reported to the client.
        dropped = stack.app.metrics.registry.get_sample_value(
            "vantum_audio_dropped_seconds_total", {"direction": "in", "reason": "rate_limit"}
        )
        assert dropped is not None and 5.0 < dropped <= 12.0 - 5.0 + 1e-6


async def test_calls_are_recorded_and_survive_a_restart(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    async with open_stack(deepgram=FAST_DG, openai=FAST_OA, cartesia=FAST_CA) as stack:
        async with open_store(url) as store:
            stack.app.store = store
            async with BrowserClient.connect(stack.ws_url) as client:
                sid = client.session_id
                turn = await speak_turn(client, 16_000)
                assert turn.finals == ["hello there"]
            with trio.fail_after(5):
                await stack.app.wait_idle()
    async with open_store(url) as reopened:  # a new process would see the same
        record = await reopened.get_call(sid)
    assert record is not None
    lines = record.transcript()
    assert lines[0] == ("caller", "hello there")
    assert lines[1][0] == "assistant" and "You said" in lines[1][1]
    assert record.summary.outcome is not None
