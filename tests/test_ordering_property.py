"""For random schedules of caller speech, transcripts and TTS chunk timings, the
client-side event stream obeys the ordering rules of docs/protocol.md."""

from __future__ import annotations

import random

import trio
import trio.testing
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_turn_taking import RATE, Recorder, start_auto, talk

from vantum.pipeline.session import Engines
from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.memory import ScriptedLLM, ScriptedSTT, ScriptedTTS, open_memory_session
from vantum.transports.browser_wire import WireEvent

AUDIO = {
    ev.OUTPUT_START,
    ev.OUTPUT_CHUNK,
    ev.OUTPUT_COMPLETE,
    ev.OUTPUT_CANCEL,
    ev.OUTPUT_PAUSE,
    ev.OUTPUT_RESUME,
}


def check_ordering(events: list[WireEvent]) -> None:
    started: set[str | None] = set()
    audio_open: str | None = None  # the answer currently audible
    finished: set[str | None] = set()  # answers whose audio completed or was cancelled
    responding: str | None = None
    paused = False  # the open answer's audio is paused (no chunk until resume/cancel)
    for e in events:
        kind, uid = e.event_type, e.payload.get("utteranceId")
        if kind == ev.RESPONSE_START:
            assert responding is None, "answers overlap"
            responding = uid
            started.add(uid)
            continue
        if kind == ev.RESPONSE_COMPLETE:
            assert uid == responding
            assert audio_open != uid, "response completed with its audio still open"
            responding = None
            continue
        if kind not in AUDIO:
            continue
        assert uid in started and uid == responding, f"{kind} outside its response"
        assert uid not in finished, f"{kind} after the answer's complete/cancel"
        if kind == ev.OUTPUT_START:
            assert audio_open is None, "two answers audible at once"
            audio_open = uid
        else:
            assert audio_open == uid, f"{kind} before audio.output.start"
            if kind == ev.OUTPUT_PAUSE:
                assert not paused, "paused twice"
                paused = True
            elif kind == ev.OUTPUT_RESUME:
                assert paused, "resumed without a pause"
                paused = False
            elif kind in (ev.OUTPUT_CHUNK, ev.OUTPUT_COMPLETE):
                assert not paused, f"{kind} while paused"
            if kind in (ev.OUTPUT_COMPLETE, ev.OUTPUT_CANCEL):
                finished.add(uid)
                audio_open = None
                paused = False


segments = st.lists(st.tuples(st.floats(0.1, 1.5), st.floats(0.05, 1.2)), min_size=1, max_size=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    schedule=segments,
    seed=st.integers(0, 2**32 - 1),
    reply_words=st.integers(1, 25),
    first_token=st.floats(0.0, 0.5),
)
def test_client_event_stream_obeys_ordering_rules(
    schedule: list[tuple[float, float]], seed: int, reply_words: int, first_token: float
) -> None:
    rng = random.Random(seed)
    tts = ScriptedTTS(delays=lambda: rng.choice([0.0, 0.005, 0.01, 0.03, 0.08]))
    llm = ScriptedLLM(
        lambda m: " ".join(f"w{i}" for i in range(reply_words)) + ".", first_token=first_token
    )
    stt = ScriptedSTT(("one", "two words", "three short words", "a much longer sentence here"))
    rec = Recorder()

    async def main() -> None:
        async with open_memory_session(Engines(stt, llm, tts)) as client:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(rec.run, client)
                await start_auto(client, silence_ms=300)
                for i, (speech_s, silence_s) in enumerate(schedule):
                    pcm = speech_like(speech_s, RATE, seed=seed + i) + silence(silence_s, RATE)
                    await talk(client, pcm)
                await talk(client, silence(0.5, RATE))
                with trio.fail_after(300):  # virtual seconds
                    await rec.settled(quiet_s=3.0)
                nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    events = [e for _, e in rec.events]
    check_ordering(events)
    # Every answer that began also ended, and the caller was answered at least once
    # whenever they said something that was not a backchannel over the bot.
    event(f"barge-ins: {min(sum(e.event_type == ev.OUTPUT_CANCEL for e in events), 2)}")
    event(f"pauses: {min(sum(e.event_type == ev.OUTPUT_PAUSE for e in events), 2)}")
    starts = sum(e.event_type == ev.RESPONSE_START for e in events)
    assert starts == sum(e.event_type == ev.RESPONSE_COMPLETE for e in events)
