"""Pause, then confirm (issue 20, item 5) on the real session pipeline, in virtual time.

Caller speech over an answer pauses its audio at once (``audio.output.pause``); a
confirmed barge-in then cancels it, anything else (a cough, noise, "mm-hm") resumes
it from where the caller stopped hearing it, so no word is lost; speech after the end
of turn and before the answer's first audio holds the answer the same way.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing
from test_turn_taking import LONG_REPLY, RATE, Recorder, engines, start_auto, talk

from vantum.pipeline.session import Engines
from vantum.pipeline.settings import CallSettings
from vantum.protocol import events as ev
from vantum.testing.audio_fixtures import silence, speech_like
from vantum.testing.memory import ScriptedLLM, open_memory_session
from vantum.transports.browser_wire import WireEvent

WINDOW_S = (CallSettings().turn.barge_in_confirm_ms or 0) / 1000
VAD_START_S = 0.06
"""The VAD's start latency: 60 ms of speech frames (vantum/audio/vad.py)."""
FRAME_S = 0.02


def audio_of(rec: Recorder, uid: str, since: float = 0.0, until: float = float("inf")) -> bytes:
    return b"".join(
        e.payload["audio"]
        for t, e in rec.of(ev.OUTPUT_CHUNK)
        if e.payload["utteranceId"] == uid and since <= t <= until
    )


def audio_between(rec: Recorder, uid: str, first: str, last: str | None) -> bytes:
    """The answer's audio after the ``first`` event of that kind and before ``last``."""
    kinds = [e.event_type for _, e in rec.events]
    start = kinds.index(first)
    end = kinds.index(last) if last is not None else len(kinds)
    return b"".join(
        e.payload["audio"]
        for _, e in rec.events[start:end]
        if e.event_type == ev.OUTPUT_CHUNK and e.payload["utteranceId"] == uid
    )


def kinds_of(rec: Recorder, uid: str) -> list[str]:
    return [e.event_type for _, e in rec.events if e.payload.get("utteranceId") == uid]


async def answer_with_interjection(
    eng: Engines, interjection: bytes | None
) -> tuple[Recorder, float | None]:
    """Ask for the long answer; 1 s into its audio, the caller makes ``interjection``.
    Returns the recorder once the call has settled, and when the interjection began
    (the instant its first 20 ms chunk was sent)."""
    onset: float | None = None
    async with open_memory_session(eng) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client)
        await talk(client, speech_like(0.8, RATE, seed=4) + silence(0.6, RATE))
        await rec.wait_for(ev.OUTPUT_START)
        await talk(client, silence(1.0, RATE))
        if interjection is not None:
            onset = trio.current_time()
            await talk(client, interjection)
        nursery.start_soon(talk, client, silence(30.0, RATE))
        await rec.wait_for(ev.RESPONSE_COMPLETE)
        await rec.settled(2.0)
        nursery.cancel_scope.cancel()
    return rec, onset


def only(rec: Recorder, kind: str) -> tuple[float, WireEvent]:
    (item,) = rec.of(kind)
    return item


async def test_a_cough_pauses_the_answer_then_it_resumes_with_no_word_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The same answer, once undisturbed and once with a cough 1 s into it.
    eng, _ = engines(["tell me a story", "uh"], reply=LONG_REPLY)
    clean, _ = await answer_with_interjection(eng, None)
    eng, seen = engines(["tell me a story", "uh"], reply=LONG_REPLY)
    cough = speech_like(0.15, RATE, seed=5) + silence(1.0, RATE)
    rec, onset = await answer_with_interjection(eng, cough)
    assert onset is not None
    (uid,) = {e.payload["utteranceId"] for _, e in rec.of(ev.OUTPUT_START)}
    paused_at, pause = only(rec, ev.OUTPUT_PAUSE)
    resumed_at, resume = only(rec, ev.OUTPUT_RESUME)
    assert pause.payload["utteranceId"] == resume.payload["utteranceId"] == uid
    # Onset -> the client's audio stops: the VAD's start latency plus one frame (the
    # onset lies somewhere in the first 20 ms chunk, sent at its end).
    assert paused_at - onset + FRAME_S <= VAD_START_S + FRAME_S
    # Not confirmed: it resumes when the window runs out, not before.
    assert resumed_at - paused_at == pytest.approx(WINDOW_S)
    assert audio_between(rec, uid, ev.OUTPUT_PAUSE, ev.OUTPUT_RESUME) == b""
    kinds = kinds_of(rec, uid)
    assert ev.OUTPUT_CANCEL not in kinds and ev.OUTPUT_COMPLETE in kinds
    # What the client played before the pause, then everything after the resumption,
    # is the whole answer's audio, byte for byte: what it dropped was sent again.
    played = round(pause.payload["playedMs"] * RATE / 1000) * 2
    before = audio_between(rec, uid, ev.OUTPUT_START, ev.OUTPUT_PAUSE)
    after = audio_between(rec, uid, ev.OUTPUT_RESUME, None)
    assert len(before) > played  # the client had some buffered, and dropped it
    (clean_uid,) = {e.payload["utteranceId"] for _, e in clean.of(ev.OUTPUT_START)}
    assert before[:played] + after == audio_of(clean, clean_uid)
    # The cough was not a turn; one answer, whole.
    assert len(seen) == 1 and len(rec.of(ev.RESPONSE_START)) == 1


async def test_a_real_barge_in_pauses_at_once_then_cancels(
    autojump_clock: trio.testing.MockClock,
) -> None:
    eng, seen = engines(["tell me a story", "stop right there please"], reply=LONG_REPLY)
    rec, onset = await answer_with_interjection(
        eng, speech_like(1.0, RATE, seed=3) + silence(1.0, RATE)
    )
    assert onset is not None
    uid = rec.of(ev.OUTPUT_START)[0][1].payload["utteranceId"]
    paused_at, _ = only(rec, ev.OUTPUT_PAUSE)
    cancelled_at, cancel = only(rec, ev.OUTPUT_CANCEL)
    assert cancel.payload["utteranceId"] == uid and cancel.payload["reason"] == "barge_in"
    assert paused_at - onset <= VAD_START_S
    assert paused_at < cancelled_at < paused_at + WINDOW_S
    assert rec.of(ev.OUTPUT_RESUME) == []
    # Nothing of the answer after the pause: the caller heard it stop at the pause.
    assert audio_between(rec, uid, ev.OUTPUT_PAUSE, None) == b""
    # The interruption is answered, and the history holds only what was played
    # before the pause (about 1 s of a long answer: at 60 ms a character, a few words).
    assert len(seen) == 2
    heard = seen[1][-2].content
    assert seen[1][-2].role == "assistant" and LONG_REPLY.startswith(heard)
    assert 0 < len(heard) <= 1.2 / 0.06


async def test_speech_before_the_first_audio_holds_the_answer_instead_of_starting_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The caller goes on talking after their turn ended and before the answer's
    audio: today the stale answer starts over them and is cut ~0.5 s later; now it is
    held, and cut without a sound once the speech is a barge-in."""
    eng, seen = engines(["tell me a story", "and make it scary"], reply=LONG_REPLY)
    eng = Engines(eng.stt, ScriptedLLM(eng.llm.reply, first_token=1.0), eng.tts)  # type: ignore[attr-defined]
    async with open_memory_session(eng) as client, trio.open_nursery() as nursery:
        rec = Recorder()
        nursery.start_soon(rec.run, client)
        await start_auto(client)
        await talk(client, speech_like(0.8, RATE, seed=4) + silence(0.6, RATE))
        first = (await rec.wait_for(ev.RESPONSE_START), rec.of(ev.RESPONSE_START)[0][1])
        uid = first[1].payload["utteranceId"]
        await talk(client, speech_like(1.2, RATE, seed=6) + silence(1.0, RATE))
        nursery.start_soon(talk, client, silence(30.0, RATE))
        await rec.wait_for(ev.RESPONSE_START, 2)
        await rec.settled(2.0)
        nursery.cancel_scope.cancel()
    # The first answer never made a sound: no audio event of it at all.
    assert not [k for k in kinds_of(rec, uid) if k.startswith("audio.output.")]
    assert ev.RESPONSE_COMPLETE in kinds_of(rec, uid)
    # The caller's words are answered (the turn and its continuation); the cut answer
    # never reached its first token, and nothing of it enters the history.
    (messages,) = seen
    said = [(m.role, m.content) for m in messages[1:]]
    assert said == [("user", "tell me a story"), ("user", "and make it scary")]
    second = rec.of(ev.RESPONSE_START)[1][1].payload["utteranceId"]
    assert ev.OUTPUT_COMPLETE in kinds_of(rec, second)
