"""``turnMode: "semantic"`` over /ws against the socket-level fakes: the turn ends
well before the silence when the end-of-turn model (scripted here; the real one is
in tests/test_semantic_turn.py) and the transcript agree, and only at the silence
when the transcript stops mid-phrase."""

from __future__ import annotations

import pytest
import trio
from e2e_helpers import FAST_CA, FAST_OA

from vantum.pipeline import audio_path
from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.browser_client import BrowserClient
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.stack import open_stack

RATE = 16_000
SILENCE_MS = 3000


class Finished:
    """Smart Turn's stand-in: every pause sounds like the end of a turn."""

    def predict(self, pcm16: bytes) -> float:
        return 0.95


async def _after_speech(
    monkeypatch: pytest.MonkeyPatch, said: str, turn_mode: str, event: str
) -> float:
    """Seconds from the end of the caller's speech to the first ``event``."""
    monkeypatch.setattr(audio_path, "load_smart_turn", Finished)
    dg = FakeDeepgramConfig(script=(said,), final_latency=0.02, interim_latency=0.01)
    # The recogniser's own endpointing (which also ends auto turns) waits longer than
    # the test: only the VAD's silence or the semantic end can end the turn.
    quiet = {"endpointing_ms": 5000, "utterance_end_ms": 5000}
    async with open_stack(
        deepgram=dg, openai=FAST_OA, cartesia=FAST_CA, stt_options=quiet
    ) as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            await client.start(RATE, turnMode=turn_mode, silenceMs=SILENCE_MS)
            speech = speech_like(1.0, RATE, seed=1)
            with trio.fail_after(20):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(client.stream_audio, speech + silence(4.0, RATE), RATE)
                    spoken = trio.current_time() + 1.0
                    await client.expect(event)
                    answered = trio.current_time() - spoken
                    nursery.cancel_scope.cancel()
    return answered


@pytest.mark.slow
async def test_semantic_turns_end_before_the_silence_over_ws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The turn's end sends the recogniser its Finalize: the final transcript follows.
    final = ev.TRANSCRIPT_FINAL
    early = await _after_speech(monkeypatch, "tell me a long story", "semantic", final)
    assert early < SILENCE_MS / 1000 - 1.0, early
    # The same call in auto mode waits for the whole silence.
    late = await _after_speech(monkeypatch, "tell me a long story", "auto", final)
    assert late >= SILENCE_MS / 1000, late


@pytest.mark.slow
async def test_a_transcript_stopping_mid_phrase_waits_for_the_silence_over_ws(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The turn ends early for the recogniser (its final comes), not for the answer.
    waited = await _after_speech(monkeypatch, "book a table for", "semantic", ev.OUTPUT_START)
    assert waited >= SILENCE_MS / 1000, waited
