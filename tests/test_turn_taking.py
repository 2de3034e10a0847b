"""Auto end of turn, barge-in and backchannels on the real session pipeline, in
virtual time (MockClock) with scripted in-memory engines."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest
import trio
import trio.testing

from vantum.pipeline.session import Engines
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.protocol import events as ev
from vantum.protocol.client_events import InputChunk, InputStart
from vantum.providers.base import ChatMessage
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.change import ChangeSignal
from vantum.testing.memory import (
    MemoryClient,
    ScriptedLLM,
    ScriptedSTT,
    ScriptedTTS,
    open_memory_session,
)
from vantum.transports.browser_wire import WireEvent, to_wire

RATE = 16_000
CHUNK_S = 0.02
LONG_REPLY = " ".join(f"word{i}" for i in range(40))


@attrs.define
class Recorder:
    """Collects server events in their documented wire form, with their (virtual)
    arrival time."""

    events: list[tuple[float, WireEvent]] = attrs.Factory(list)
    _changed: ChangeSignal = attrs.Factory(ChangeSignal)

    async def run(self, client: MemoryClient) -> None:
        async for event in client.events:
            self.events.append((trio.current_time(), to_wire(event)))
            self._changed.notify()

    def of(self, kind: str) -> list[tuple[float, WireEvent]]:
        return [(t, e) for t, e in self.events if e.event_type == kind]

    async def settled(self, quiet_s: float) -> None:
        """Wait until every answer that started has completed and nothing is said for a while."""
        while True:
            with trio.move_on_after(quiet_s):
                await self._changed.wait()
                continue
            if len(self.of(ev.RESPONSE_START)) == len(self.of(ev.RESPONSE_COMPLETE)):
                return

    async def wait_for(self, kind: str, count: int = 1) -> float:
        await self._changed.wait_until(lambda: len(self.of(kind)) >= count)
        return self.of(kind)[count - 1][0]


async def talk(client: MemoryClient, pcm: bytes) -> float:
    """Send ``pcm`` at real-time pace; returns the time the last chunk was sent."""
    step = int(2 * RATE * CHUNK_S)
    start = trio.current_time()
    for i in range(0, len(pcm), step):
        await client.send.send(InputChunk("c", pcm[i : i + step]))
        await trio.sleep_until(start + (i // step + 1) * CHUNK_S)
    return trio.current_time()


def engines(
    script: Sequence[str], reply: str | None = None, *, word_interval: float = 0.25
) -> tuple[Engines, list[list[ChatMessage]]]:
    """Scripted engines; the list collects every message list the LLM was given."""
    seen: list[list[ChatMessage]] = []

    def answer(messages: Sequence[ChatMessage]) -> str:
        seen.append(list(messages))
        return reply or f"You said {messages[-1].content}."

    stt = ScriptedSTT(script, word_interval=word_interval)
    return Engines(stt, ScriptedLLM(answer), ScriptedTTS()), seen


async def start_auto(client: MemoryClient, silence_ms: int = 400) -> None:
    await client.send.send(InputStart("s", RATE, turn_mode="auto", silence_ms=silence_ms))


async def test_auto_end_of_turn_fires_within_the_configured_silence(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eng, seen = engines(["what time is it"])
    async with open_memory_session(eng) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client, silence_ms=400)
        spoke_until = await talk(client, speech_like(1.0, RATE, seed=1))
        nursery.start_soon(talk, client, silence(3.0, RATE))
        final_at = await rec.wait_for(ev.TRANSCRIPT_FINAL)
        await rec.wait_for(ev.RESPONSE_TEXT)
        # 400 ms of silence, 50 ms for the STT to finalize, and up to 100 ms of the
        # WebRTC VAD's own hangover (it keeps saying "speech" for a few frames).
        assert 0.4 <= final_at - spoke_until <= 0.4 + 0.05 + 0.1
        assert rec.of(ev.TRANSCRIPT_FINAL)[0][1].payload["transcript"] == "what time is it"
        assert seen[0][-1].content == "what time is it"
        nursery.cancel_scope.cancel()


async def test_barge_in_cancels_within_one_chunk_and_history_keeps_played_part(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eng, seen = engines(["tell me a story", "stop right there please"], reply=LONG_REPLY)
    # Words alone confirm here, so the confirming moment is visible to the client.
    options = CallSettings(turn=TurnPolicy(barge_in_min_speech_ms=0))
    async with open_memory_session(eng, options) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client)
        await talk(client, speech_like(0.8, RATE, seed=2) + silence(0.6, RATE))
        started = await rec.wait_for(ev.OUTPUT_START)
        await talk(client, silence(1.5, RATE))  # let 1.5 s of the answer play
        interrupted_at = trio.current_time()
        nursery.start_soon(talk, client, speech_like(1.0, RATE, seed=3) + silence(1.0, RATE))
        cancel_at = await rec.wait_for(ev.OUTPUT_CANCEL)
        uid = rec.of(ev.OUTPUT_START)[0][1].payload["utteranceId"]
        # Confirmation = the first interim over the bot with 2+ words.
        confirm_at = next(
            t
            for t, e in rec.of(ev.TRANSCRIPT_INTERIM)
            if t >= interrupted_at and len(e.payload["transcript"].split()) >= 2
        )
        assert cancel_at - confirm_at <= 0.04  # within one 40 ms output chunk
        assert all(
            t <= cancel_at for t, e in rec.of(ev.OUTPUT_CHUNK) if e.payload["utteranceId"] == uid
        )
        kinds = [e.event_type for _, e in rec.events if e.payload.get("utteranceId") == uid]
        assert ev.OUTPUT_COMPLETE not in kinds
        assert kinds.index(ev.OUTPUT_CANCEL) > max(
            i for i, k in enumerate(kinds) if k == ev.OUTPUT_CHUNK
        )
        # The interruption becomes the next turn; the LLM's history has only what was heard.
        first_answer_chunks = len(rec.of(ev.RESPONSE_TEXT))
        await rec.wait_for(ev.RESPONSE_TEXT, first_answer_chunks + 1)  # the LLM was asked again
        history = seen[1]
        assert history[-1].content == "stop right there please"
        assistant = history[-2]
        assert assistant.role == "assistant"
        heard = assistant.content.split()
        full = LONG_REPLY.split()
        assert 0 < len(heard) < len(full) and full[: len(heard)] == heard
        played_s = cancel_at - started
        # ScriptedTTS words are 6 chars = 0.36 s; the caller heard about played_s worth.
        assert abs(len(heard) - played_s / 0.36) <= 2
        nursery.cancel_scope.cancel()


async def test_noise_burst_and_backchannel_do_not_interrupt(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eng, seen = engines(["tell me a story", "uh", "mmhm"], reply=LONG_REPLY)
    async with open_memory_session(eng) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client)
        await talk(client, speech_like(0.8, RATE, seed=4) + silence(0.6, RATE))
        await rec.wait_for(ev.OUTPUT_START)
        await talk(client, silence(1.0, RATE))
        await talk(client, speech_like(0.15, RATE, seed=5) + silence(1.0, RATE))  # a cough
        await talk(client, speech_like(0.5, RATE, seed=6) + silence(1.0, RATE))  # "mm-hm"
        nursery.start_soon(talk, client, silence(20.0, RATE))
        await rec.wait_for(ev.OUTPUT_COMPLETE)
        await rec.wait_for(ev.METRICS_TURN)
        await trio.sleep(2.0)
        assert rec.of(ev.OUTPUT_CANCEL) == []
        assert len(rec.of(ev.RESPONSE_START)) == 1  # the backchannel got no answer
        assert len(seen) == 1
        nursery.cancel_scope.cancel()


async def test_idle_caller_is_prompted_then_the_call_ends(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eng, seen = engines(["hello"])
    policy = TurnPolicy(idle_prompt_s=5.0, max_idle_prompts=2)
    async with open_memory_session(eng, CallSettings(turn=policy)) as client:
        rec = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run, client)
            await start_auto(client)
            t0 = trio.current_time()
            with trio.fail_after(60):
                await rec.wait_for("connection.lifecycle.hangup")
            texts = [e.payload["text"] for _, e in rec.of(ev.RESPONSE_TEXT)]
            assert texts == [
                "Are you still there?",
                "Hello? I can't hear you.",
                "It seems you've stepped away. Goodbye!",
            ]
            first_prompt = rec.of(ev.RESPONSE_START)[0][0]
            assert 5.0 <= first_prompt - t0 <= 5.1
            assert seen == []  # canned prompts never reach the LLM
            nursery.cancel_scope.cancel()


async def test_max_call_duration_ends_the_call(autojump_clock: trio.testing.MockClock) -> None:
    eng, _ = engines(["hello"])
    async with open_memory_session(eng, CallSettings(max_call_s=30.0)) as client:
        rec = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run, client)
            t0 = trio.current_time()
            await start_auto(client)
            with trio.fail_after(60):
                at = await rec.wait_for("connection.lifecycle.max_duration")
            assert 30.0 <= at - t0 <= 30.1
            nursery.cancel_scope.cancel()


async def voice_to_voice(speculate: bool, final_latency: float) -> tuple[float, bool]:
    stt = ScriptedSTT(["what is the weather like"], final_latency=final_latency)
    eng = Engines(stt, ScriptedLLM(first_token=0.3), ScriptedTTS())
    options = CallSettings(turn=TurnPolicy(speculate=speculate))
    async with open_memory_session(eng, options) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client, silence_ms=400)
        await talk(client, speech_like(1.6, RATE, seed=9))
        nursery.start_soon(talk, client, silence(5.0, RATE))
        await rec.wait_for(ev.METRICS_TURN)
        metrics = rec.of(ev.METRICS_TURN)[0][1].payload
        nursery.cancel_scope.cancel()
    return metrics["voiceToVoiceMs"], metrics["speculative"]


async def test_speculative_answer_saves_the_stt_final_latency(
    autojump_clock: trio.testing.MockClock,
) -> None:
    plain, was_spec = await voice_to_voice(False, final_latency=0.15)
    assert not was_spec
    fast, was_spec = await voice_to_voice(True, final_latency=0.15)
    assert was_spec
    print(f"voice-to-voice: {plain:.0f} ms plain, {fast:.0f} ms speculative")
    # The LLM ran while the STT finalized: the 150 ms final latency is hidden.
    assert plain - fast == pytest.approx(150, abs=25)


async def test_wrong_guess_is_dropped_unheard(autojump_clock: trio.testing.MockClock) -> None:
    # The interim ("what is the") differs from the final: the guess must never be heard.
    stt = ScriptedSTT(["what is the weather like"], word_interval=0.5)
    eng = Engines(stt, ScriptedLLM(), ScriptedTTS())
    async with open_memory_session(eng) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client, silence_ms=400)
        await talk(client, speech_like(1.6, RATE, seed=10))
        nursery.start_soon(talk, client, silence(5.0, RATE))
        await rec.wait_for(ev.METRICS_TURN)
        assert len(rec.of(ev.RESPONSE_START)) == 1
        texts = " ".join(e.payload["text"] for _, e in rec.of(ev.RESPONSE_TEXT))
        assert texts == "You said what is the weather like."
        assert rec.of(ev.METRICS_TURN)[0][1].payload["speculative"] is False
        nursery.cancel_scope.cancel()


async def test_the_end_of_the_call_cuts_the_answer_and_drains_what_is_queued(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """At the time limit the answer in progress is cancelled and the output side ends by
    closing: every event already produced reaches the caller, in order, then the bye."""
    eng, _ = engines(["tell me a story"], reply=LONG_REPLY)
    async with open_memory_session(eng, CallSettings(max_call_s=4.0)) as client:
        rec = Recorder()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(rec.run, client)
            await start_auto(client)
            nursery.start_soon(talk, client, speech_like(0.8, RATE, seed=2) + silence(9.0, RATE))
            with trio.fail_after(60):
                at = await rec.wait_for("connection.lifecycle.max_duration")
            assert 4.0 <= at <= 4.1
            kinds = [e.event_type for _, e in rec.events]
            uid = rec.of(ev.OUTPUT_START)[0][1].payload["utteranceId"]
            (cancel,) = rec.of(ev.OUTPUT_CANCEL)
            assert cancel[1].payload == {"utteranceId": uid, "reason": "call_ended"}
            assert kinds[-4:] == [
                ev.OUTPUT_CANCEL,
                ev.RESPONSE_COMPLETE,
                ev.METRICS_TURN,
                "connection.lifecycle.max_duration",
            ]
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("burst_s", "interrupts"),
    [(0.04, False), (0.15, False), (0.6, True)],
    ids=["click", "noise-burst", "two-real-words"],
)
async def test_barge_in_needs_vad_speech_not_just_words(
    autojump_clock: trio.testing.MockClock, burst_s: float, interrupts: bool
) -> None:
    """The recogniser hears two words in every burst (a click, 150 ms of noise, a real
    "stop it"); only the one with 200 ms of VAD speech interrupts, and the others are
    not answered as turns either."""
    eng, seen = engines(["tell me a story", "stop it"], reply=LONG_REPLY, word_interval=0.01)
    async with open_memory_session(eng) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client)
        await talk(client, speech_like(0.8, RATE, seed=2) + silence(0.6, RATE))
        await rec.wait_for(ev.OUTPUT_START)
        await talk(client, silence(1.0, RATE))
        await talk(client, speech_like(burst_s, RATE, seed=11) + silence(1.5, RATE))
        interims = [e.payload["transcript"] for _, e in rec.of(ev.TRANSCRIPT_INTERIM)]
        assert "stop it" in interims  # the words were there in every case
        assert bool(rec.of(ev.OUTPUT_CANCEL)) is interrupts
        assert len(seen) == (2 if interrupts else 1)
        nursery.cancel_scope.cancel()
