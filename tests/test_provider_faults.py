"""Provider fault matrix: every provider × fault ends in a retry, a spoken fallback or
a clean error, and the session survives it (issue 8).

Each cell injects one fault in a fake, holds a manual turn and accepts only the
outcomes listed below, within ``TURN_BOUND`` seconds. Then, once the fault has
cleared, a second turn must be answered cleanly, the call must close, the server
must have no session and no Vantum task left, and nothing may be logged at ERROR.

Outcomes: **heard** — the real answer was spoken, no error event; **fallback** — an
``llm.error.*`` event and a spoken fallback answer; **error** — a documented error
event (``stt.error.provider``, ``tts.error.synthesis``, ``llm.error.*``) and the
turn ended with its ``metrics.turn`` (the answer's text, or even the answer, may
still come through).

=========  =========================================  =====================================
provider   fault (how it is injected)                 expected outcome
=========  =========================================  =====================================
deepgram   slow start: 1st handshake held 2.5 s,      heard — handshake times out, reconnect,
           client connect timeout 1 s                 buffered audio is replayed
deepgram   stall: silent after 0.3 s of audio         heard — the unanswered Finalize makes
           (forever on that connection)               the client reconnect and replay
deepgram   reset: TCP closed (no close frame) after   heard — reconnect and replay
           0.5 s of audio
deepgram   429 storm: every handshake for 1.2 s       error (stt.error.provider), then the
                                                      answer — reconnects run out, the engine
                                                      restarts on the audio still queued
deepgram   malformed: first server frame not JSON     heard — that connection is dropped and
                                                      the audio replayed
openai     slow start: headers held 2.5 s, read       heard — timeout, retried
           timeout 1 s
openai     stall: silent 3 s halfway, read timeout    error/fallback (llm.error.network) —
           1 s                                        no retry once text may be spoken
openai     reset: connection closed mid-body          error/fallback (llm.error.network)
openai     429 storm: every request for 2 s,          fallback (llm.error.rate_limit) — three
           Retry-After 0.2 s                          attempts all refused
openai     malformed: one ``data:`` event not JSON    error/fallback (llm.error.network)
cartesia   slow start: handshake held 2.5 s,          error (tts.error.synthesis) — text only;
           connect timeout 1 s                        the next answer reconnects
cartesia   stall: context silent after 2 chunks       error (tts.error.synthesis) after the
           (forever)                                  client's stall timeout (1 s here)
cartesia   reset: TCP RST after 3 chunks              error (tts.error.synthesis)
cartesia   429 storm: every handshake for 1 s         error (tts.error.synthesis)
cartesia   malformed: one non-JSON frame after        heard — the frame is skipped
           2 chunks
=========  =========================================  =====================================
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable

import attrs
import httpx
import pytest
import trio
from e2e_helpers import FAST_CA, FAST_DG, FAST_OA, speak_turn
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from vantum.errors import LLMError, LLMErrorKind, STTError, TTSError
from vantum.pipeline.messages import InputEnded
from vantum.pipeline.turns import Respond, TurnState
from vantum.protocol import events as ev
from vantum.providers import cartesia_messages as cm
from vantum.providers import deepgram_messages as dm
from vantum.providers.base import (
    ChatMessage,
    Finalize,
    FinalizeDone,
    STTEvent,
    STTInput,
    TranscriptEvent,
    TTSEvent,
)
from vantum.providers.llm_openai import OpenAILLM
from vantum.providers.stt_deepgram import DeepgramSTT
from vantum.providers.tts_cartesia import CartesiaTTS
from vantum.testing.audio_fixtures import chunks, silence, speech_like
from vantum.testing.browser_client import BrowserClient, TurnResult
from vantum.testing.fake_cartesia import serve_fake_cartesia
from vantum.testing.fake_deepgram import serve_fake_deepgram
from vantum.testing.fake_openai import serve_fake_openai
from vantum.testing.stack import Stack, open_stack

RATE = 16_000
TURN_BOUND = 15.0
DOCUMENTED_ERRORS = {
    ev.ERR_STT,
    ev.ERR_TTS,
    *(ev.llm_error(kind) for kind in ("auth", "rate_limit", "network", "fatal")),
}

STT_OPTIONS = {"connect_timeout": 1.0, "finalize_timeout": 1.0, "reconnect_backoff": 0.05}
LLM_OPTIONS = {"timeout": 1.0}
TTS_OPTIONS = {"connect_timeout": 1.0, "stall_timeout": 1.0}


@attrs.frozen
class Cell:
    inject: Callable[[Stack], None]
    expected: frozenset[str]
    clear: Callable[[Stack], Awaitable[None]] | None = None


async def _dg_storm_over(stack: Stack) -> None:
    await stack.deepgram.wait_refusals_over()


async def _oa_storm_over(stack: Stack) -> None:
    await stack.openai.wait_refusals_over()


async def _ca_storm_over(stack: Stack) -> None:
    await stack.cartesia.wait_refusals_over()


INJECTED = {
    "slow_start": "slow_start",
    "stall": "stall",
    "reset": "reset",
    "429_storm": "refused",
    "malformed": "malformed",
}
HEARD = frozenset({"heard"})
LLM_FAILED = frozenset({"error", "fallback"})
TTS_FAILED = frozenset({"error"})

CELLS: dict[tuple[str, str], Cell] = {
    ("deepgram", "slow_start"): Cell(lambda s: s.deepgram.slow_start_next(2.5), HEARD),
    ("deepgram", "stall"): Cell(lambda s: s.deepgram.stall_after(0.3, math.inf), HEARD),
    ("deepgram", "reset"): Cell(lambda s: s.deepgram.drop_after(0.5), HEARD),
    ("deepgram", "429_storm"): Cell(
        lambda s: s.deepgram.refuse_for(1.2, 429), frozenset({"error"}), _dg_storm_over
    ),
    ("deepgram", "malformed"): Cell(lambda s: s.deepgram.malform_next(1, "json"), HEARD),
    ("openai", "slow_start"): Cell(lambda s: s.openai.slow_start_next(2.5), HEARD),
    ("openai", "stall"): Cell(lambda s: s.openai.stall_next(3.0), LLM_FAILED),
    ("openai", "reset"): Cell(lambda s: s.openai.reset_next(), LLM_FAILED),
    ("openai", "429_storm"): Cell(
        lambda s: s.openai.refuse_for(2.0, 429, retry_after=0.2),
        frozenset({"fallback"}),
        _oa_storm_over,
    ),
    ("openai", "malformed"): Cell(lambda s: s.openai.malform_next("json"), LLM_FAILED),
    ("cartesia", "slow_start"): Cell(lambda s: s.cartesia.slow_start_next(2.5), TTS_FAILED),
    ("cartesia", "stall"): Cell(lambda s: s.cartesia.stall_next_context(2), TTS_FAILED),
    ("cartesia", "reset"): Cell(lambda s: s.cartesia.reset_next_connection_after(3), TTS_FAILED),
    ("cartesia", "429_storm"): Cell(
        lambda s: s.cartesia.refuse_for(1.0, 429), TTS_FAILED, _ca_storm_over
    ),
    ("cartesia", "malformed"): Cell(lambda s: s.cartesia.malform_next(2, "json"), HEARD),
}


def count_vantum_tasks() -> int:
    """Tasks running Vantum's own code (the fakes' tasks don't count)."""

    def walk(task: trio.lowlevel.Task) -> int:
        mine = task.name.startswith("vantum.") and not task.name.startswith("vantum.testing")
        return int(mine) + sum(walk(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    return walk(root)


def outcome_of(turn: TurnResult) -> str:
    kinds = [e["eventType"] for e in turn.errors]
    assert set(kinds) <= DOCUMENTED_ERRORS, kinds
    assert all(e.get("requestType") for e in turn.errors)
    said = " ".join(turn.text)
    if not kinds:
        assert turn.finals and f"You said: {turn.finals[-1]}" in said, turn.events
        assert turn.audio_seconds > 0.3
        return "heard"
    if any(k.startswith("llm.error.") for k in kinds) and turn.audio_seconds > 0.3:
        return "fallback" if "You said" not in said else "error"
    return "error"


@pytest.mark.parametrize("fault", ["slow_start", "stall", "reset", "429_storm", "malformed"])
@pytest.mark.parametrize("provider", ["deepgram", "openai", "cartesia"])
async def test_fault_ends_cleanly_and_session_survives(
    provider: str, fault: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    cell = CELLS[provider, fault]
    async with open_stack(
        deepgram=FAST_DG,
        openai=FAST_OA,
        cartesia=FAST_CA,
        playback_lead_ms=60_000,  # answers are not paced to real time here
        stt_options=STT_OPTIONS,
        llm_options=LLM_OPTIONS,
        tts_options=TTS_OPTIONS,
    ) as stack:
        tasks_before = count_vantum_tasks()
        cell.inject(stack)
        async with BrowserClient.connect(stack.ws_url) as client:
            started = trio.current_time()
            with trio.fail_after(TURN_BOUND):
                turn = await speak_turn(client, RATE)
            outcome = outcome_of(turn)
            print(f"{provider}/{fault}: {outcome} in {trio.current_time() - started:.2f}s")
            assert outcome in cell.expected, turn.events
            if cell.clear is not None:
                await cell.clear(stack)
            with trio.fail_after(TURN_BOUND):
                good = await speak_turn(client, RATE)
            assert good.errors == [], good.errors
            assert good.finals and good.finals[-1] in " ".join(good.text)  # not a late answer
            assert good.audio_seconds > 0.3
        served = {
            "deepgram": stack.deepgram.injected,
            "openai": stack.openai.injected,
            "cartesia": stack.cartesia.injected,
        }[provider]
        assert served[INJECTED[fault]] >= 1, served  # the fault really happened
        # ... and an operator sees it in /metrics, even where a retry hid it from the caller.
        failures = {
            sample.labels["kind"]: sample.value
            for metric in stack.app.metrics.registry.collect()
            if metric.name == "vantum_provider_errors"
            for sample in metric.samples
            if sample.name.endswith("_total") and sample.labels["provider"] == provider
        }
        print(f"  provider errors counted: {failures}")
        assert sum(failures.values()) >= 1, failures
        with trio.fail_after(5):
            await stack.app.wait_idle()
        assert stack.app.sessions == {}
        assert count_vantum_tasks() == tasks_before
    errors = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR
        and r.name.startswith("vantum")
        and not r.name.startswith("vantum.testing")
    ]
    assert errors == [], [r.getMessage() for r in errors]


# ------------------------------------------------ focused client-level checks of the fixes


async def finals_of_one_turn(stt: DeepgramSTT) -> list[str]:
    """Speak one utterance, Finalize it, and return the final transcripts."""
    audio_tx, audio_rx = trio.open_memory_channel[STTInput](256)
    events_tx, events_rx = trio.open_memory_channel[STTEvent](256)
    got: list[STTEvent] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stt.run, audio_rx, events_tx)
            async with audio_tx:
                for chunk in chunks(speech_like(0.8) + silence(0.1)):
                    await audio_tx.send(chunk)
                await audio_tx.send(Finalize())
                async for event in events_rx:
                    got.append(event)
                    if isinstance(event, FinalizeDone):
                        break
    return [e.text for e in got if isinstance(e, TranscriptEvent) and e.is_final and e.text]


async def test_deepgram_unanswered_finalize_reconnects_and_replays() -> None:
    """A server that goes silent mid-stream is dropped; the replay gets the words."""
    async with serve_fake_deepgram(FAST_DG) as fake:
        fake.stall_after(0.2)
        stt = DeepgramSTT(fake.api_key, fake.url, finalize_timeout=0.3, reconnect_backoff=0.01)
        assert await finals_of_one_turn(stt) == ["hello there"]
    assert fake.connections == 2


@pytest.mark.parametrize("kind", ["json", "shape"])
async def test_deepgram_malformed_frame_reconnects_and_replays(kind: str) -> None:
    async with serve_fake_deepgram(FAST_DG) as fake:
        fake.malform_next(1, kind)
        stt = DeepgramSTT(fake.api_key, fake.url, reconnect_backoff=0.01)
        assert await finals_of_one_turn(stt) == ["hello there"]
    assert fake.connections == 2
    assert fake.sent["malformed"] == 1


async def test_deepgram_server_sending_only_garbage_is_an_stt_error() -> None:
    async with serve_fake_deepgram(FAST_DG) as fake:
        fake.malform_next(1000)
        stt = DeepgramSTT(fake.api_key, fake.url, reconnect_backoff=0.01, max_reconnects=2)
        with pytest.raises(BaseExceptionGroup) as caught:
            await finals_of_one_turn(stt)
    assert caught.group_contains(STTError, match="3 times in a row; last: Deepgram sent a frame")
    assert fake.connections == 3


@pytest.mark.parametrize("kind", ["json", "shape"])
async def test_openai_malformed_stream_is_a_network_error(kind: str) -> None:
    async with serve_fake_openai(FAST_OA) as fake:
        fake.malform_next(kind)
        async with OpenAILLM(fake.api_key, fake.base_url, "m") as llm:
            out_tx, out_rx = trio.open_memory_channel[str](256)
            with pytest.raises(LLMError) as caught:
                await llm.stream([ChatMessage("user", "hi")], out_tx)
    assert caught.value.kind is LLMErrorKind.NETWORK
    assert "malformed" in caught.value.message
    out_rx.close()


async def test_cartesia_connect_timeout_holds_when_the_handshake_is_held() -> None:
    async with serve_fake_cartesia(FAST_CA) as fake:
        fake.slow_start_next(5.0)
        tts = CartesiaTTS(fake.api_key, fake.url, connect_timeout=0.3)
        with trio.fail_after(2), pytest.raises(TTSError, match="ConnectionTimeout"):
            async with tts.connect():
                pass
        async with tts.connect() as conn:  # the next handshake is prompt again
            assert conn.connects == 1


async def test_cartesia_stalled_context_fails_and_is_cancelled_at_provider() -> None:
    async with serve_fake_cartesia(FAST_CA) as fake:
        fake.stall_next_context(after_chunks=1)
        tts = CartesiaTTS(fake.api_key, fake.url, stall_timeout=0.3)
        async with tts.connect() as conn:
            for context_id, stalls in (("ctx-1", True), ("ctx-2", False)):
                text_tx, text_rx = trio.open_memory_channel[str](4)
                out_tx, out_rx = trio.open_memory_channel[TTSEvent](1024)
                async with text_tx:
                    await text_tx.send("Hello there, how are you?")
                with trio.fail_after(2):
                    if stalls:
                        with pytest.raises(TTSError, match="stalled"):
                            await conn.synthesize(context_id, text_rx, out_tx)
                    else:
                        await conn.synthesize(context_id, text_rx, out_tx)
                out_rx.close()
    assert fake.cancels == ["ctx-1"]
    assert fake.completed == ["ctx-2"]  # same connection, still usable


# ------------------------------------------------- the new fault switches are wire-faithful


async def test_storms_are_real_http_429s() -> None:
    async with serve_fake_deepgram(FAST_DG) as dg, serve_fake_openai(FAST_OA) as oa:
        dg.refuse_for(10.0)
        url = dm.listen_url(dg.url, dm.ListenOptions())
        headers = list(dm.auth_headers(dg.api_key))
        with pytest.raises(ConnectionRejected) as refused:
            async with open_websocket_url(url, extra_headers=headers):
                pass
        assert refused.value.status_code == 429
        assert json.loads(refused.value.body or b"")["err_code"] == "TOO_MANY_REQUESTS"
        oa.refuse_for(10.0, retry_after=0.5)
        async with httpx.AsyncClient() as http:
            response = await http.post(
                oa.base_url + "/chat/completions",
                headers={"authorization": f"Bearer {oa.api_key}"},
                json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
            )
        assert response.status_code == 429
        assert response.headers["retry-after"] == "0.5"
        assert response.json()["error"]["code"] == "rate_limit_exceeded"


async def test_cartesia_reset_has_no_close_frame() -> None:
    async with serve_fake_cartesia(FAST_CA) as fake:
        fake.reset_next_connection_after(2)
        url = cm.build_url(fake.url, fake.api_key, cm.DEFAULT_VERSION)
        request = cm.GenerationRequest(
            context_id="c",
            transcript="A sentence long enough for several chunks of audio.",
            model_id="sonic-2",
            voice_id="v",
            output_format=cm.OutputFormat(sample_rate=24_000),
        )
        async with open_websocket_url(url) as ws:
            await ws.send_message(cm.encode_request(request))
            with trio.fail_after(2), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await ws.get_message()
        reason = closed.value.reason
        assert reason is not None and reason.code == 1006  # abnormal: no close frame came


def test_turn_ended_while_the_previous_finalize_is_queued_is_answered() -> None:
    """While the STT restarts, a caller's next turn ends before the last one's Finalize
    was answered; the two FinalizeDone events must close two turns, not one."""
    turns = TurnState()
    assert turns.handle(InputEnded(0.0), 0.0) == []
    assert turns.handle(InputEnded(1.0), 1.0) == []
    turns.handle(TranscriptEvent("hello there", is_final=True), 2.0)
    assert [type(a) for a in turns.handle(FinalizeDone(), 2.0)] == [Respond]
    turns.handle(TranscriptEvent("what time is it", is_final=True), 2.1)
    assert [type(a) for a in turns.handle(FinalizeDone(), 2.1)] == [Respond]
