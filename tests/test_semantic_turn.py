"""Semantic end of turn (issue 23 item 2): the word table, the turn manager's
decision, the audio path's early end, and the real Smart Turn model off the loop.

The model tests need Smart Turn v3.2 from the pipecat-ai wheel
(``scripts/install-semantic.sh``, which ``scripts/test.sh`` runs); without it they
skip, saying so. Everything else runs with a scripted model.
"""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator, Sequence

import attrs
import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.agents.loader import parse_agents
from vantum.audio import smart_turn
from vantum.audio.log_mel import SAMPLES, last_seconds, log_mel
from vantum.audio.resample import StreamResampler
from vantum.pipeline import audio_path, end_of_turn
from vantum.pipeline.audio_path import run_audio_path
from vantum.pipeline.endpoint import INCOMPLETE_ENDINGS, ends_incomplete, last_word
from vantum.pipeline.messages import (
    AudioItem,
    SttItem,
    TurnCeiling,
    TurnInput,
    VoiceEnd,
    VoiceStart,
)
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.pipeline.turn_state import Respond, TurnState
from vantum.protocol import client_events, envelope
from vantum.protocol import events as ev
from vantum.protocol.ids import new_id
from vantum.providers import local_tts
from vantum.providers.base import FinalizeDone, TranscriptEvent
from vantum.stall import StallMonitor

RATE = 16_000
MODEL_MISSING = smart_turn.smart_turn_unavailable()
needs_model = pytest.mark.skipif(
    MODEL_MISSING is not None,
    reason=f"SEMANTIC EXTRA ABSENT, real Smart Turn tests skipped: {MODEL_MISSING}",
)

EN = sorted(INCOMPLETE_ENDINGS["en"])
COMPLETE_WORDS = ["two", "please", "tomorrow", "Friday", "thanks", "it", "now", "there"]
WORD = st.sampled_from(["book", "a", "table", "for", "two", "please", "I", "want", "the"])
PUNCT = st.sampled_from(["", ".", ",", "!", "?", "...", " -", '"'])


# --- the word table (pure) -----------------------------------------------------------


@given(st.lists(WORD, max_size=6), st.sampled_from(EN), PUNCT, st.booleans())
def test_a_phrase_ending_in_a_listed_word_is_incomplete(
    words: list[str], last: str, punct: str, upper: bool
) -> None:
    ending = last.upper() if upper else last
    assert ends_incomplete(" ".join([*words, ending]) + punct, "en-US")


@given(st.lists(WORD, max_size=6), st.sampled_from(COMPLETE_WORDS), PUNCT)
def test_a_phrase_ending_in_another_word_is_complete(
    words: list[str], last: str, punct: str
) -> None:
    text = " ".join([*words, last]) + punct
    assert not ends_incomplete(text, "en-US")
    assert last_word(text) == last.lower()


@given(st.text(max_size=40))
def test_case_and_surrounding_punctuation_do_not_change_the_verdict(text: str) -> None:
    assert ends_incomplete(text, "en") == ends_incomplete(text.upper() + " ?!", "en-GB")


def test_empty_text_and_unknown_languages() -> None:
    assert ends_incomplete("", "en-US") and ends_incomplete(" ... ", "en-US")
    assert not ends_incomplete("a table for", "ja-JP")  # no table: the model decides
    assert ends_incomplete("una mesa para", "es-ES")
    assert ends_incomplete("I’m", "en")  # typographic apostrophe


# --- the turn manager's decision (pure) ------------------------------------------------

AUTO = CallSettings(16_000, turn_mode="auto", silence_ms=800)


def interim(text: str) -> TranscriptEvent:
    return TranscriptEvent(text, is_final=False)


def final(text: str) -> TranscriptEvent:
    return TranscriptEvent(text, is_final=True)


def responds(actions: Sequence[object]) -> list[str]:
    return [a.request.text for a in actions if isinstance(a, Respond)]


def test_an_early_end_on_a_complete_phrase_answers_at_once() -> None:
    s = TurnState(AUTO)
    s.handle(VoiceStart(0.0), 0.0)
    s.handle(interim("book a table for two"), 1.0)
    guess = s.handle(VoiceEnd(1.3, 1000, True, early_ms=500), 1.3)
    assert responds(guess) == ["book a table for two"]  # the speculative answer starts
    s.handle(final("book a table for two"), 1.4)
    assert s.handle(FinalizeDone(), 1.4) == []  # the guess was right: kept
    assert s.held_open_until is None


def test_an_early_end_mid_phrase_waits_for_the_silence() -> None:
    s = TurnState(AUTO)
    s.handle(VoiceStart(0.0), 0.0)
    s.handle(interim("I'd like to book a table for"), 1.0)
    assert s.handle(VoiceEnd(1.3, 1000, True, early_ms=500), 1.3) == []
    assert s.ceiling_deadline == pytest.approx(1.8)
    s.handle(final("I'd like to book a table for."), 1.4)
    assert s.handle(FinalizeDone(), 1.4) == []  # still mid-phrase: no answer yet
    assert s.handle(TurnCeiling(1.7), 1.7) == []  # not yet
    assert responds(s.handle(TurnCeiling(1.8), 1.8)) == ["I'd like to book a table for."]


def test_the_caller_going_on_keeps_one_turn() -> None:
    s = TurnState(AUTO)
    s.handle(VoiceStart(0.0), 0.0)
    s.handle(interim("a table for"), 1.0)
    s.handle(VoiceEnd(1.3, 1000, True, early_ms=500), 1.3)
    s.handle(final("a table for"), 1.35)
    s.handle(FinalizeDone(), 1.35)
    s.handle(VoiceStart(1.5), 1.5)  # "...two, please"
    assert s.ceiling_deadline == float("inf")
    s.handle(final("two please"), 2.2)
    guess = s.handle(VoiceEnd(2.3, 600, True), 2.3)
    assert responds(guess) == ["a table for two please"]


def test_a_final_that_completes_the_phrase_ends_the_turn_before_the_ceiling() -> None:
    s = TurnState(AUTO)
    s.handle(VoiceStart(0.0), 0.0)
    s.handle(interim("a table for"), 1.0)  # the interim lagged the words
    s.handle(VoiceEnd(1.3, 1000, True, early_ms=500), 1.3)
    s.handle(final("a table for two"), 1.4)
    assert responds(s.handle(FinalizeDone(), 1.4)) == ["a table for two"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(WORD, min_size=1, max_size=5),
    st.integers(0, 1500),
    st.integers(1, 400),
    st.booleans(),
)
def test_an_early_end_never_answers_mid_phrase_before_the_silence(
    words: list[str], early_ms: int, finalize_ms: int, final_first: bool
) -> None:
    """For any phrase, early end and finalize latency: a phrase that stops mid-phrase
    is answered at the silence ceiling and not before, any other at once; never twice."""
    text = " ".join(words)
    s = TurnState(AUTO)
    s.handle(VoiceStart(0.0), 0.0)
    s.handle(interim(text), 0.5)
    end = 1.0
    ceiling = end + early_ms / 1000
    done = end + finalize_ms / 1000
    answered: list[tuple[float, list[str]]] = []
    answered.append((end, responds(s.handle(VoiceEnd(end, 500, True, early_ms), end))))
    events: list[tuple[float, object]] = [(done, "final"), (ceiling, "ceiling")]
    events.sort(key=lambda e: (e[0], e[1] != "final" if final_first else e[1] == "final"))
    for at, what in events:
        if what == "final":
            s.handle(final(text), at)
            answered.append((at, responds(s.handle(FinalizeDone(), at))))
        else:
            answered.append((at, responds(s.handle(TurnCeiling(at), at))))
    answers = [(at, r) for at, r in answered if r]
    assert len(answers) == 1 and answers[0][1] == [text]  # exactly one answer
    if ends_incomplete(text, "en-US") and early_ms > 0:
        assert answers[0][0] >= min(ceiling, done) and answers[0][0] >= ceiling
    else:
        assert answers[0][0] == end  # answered at the early end (speculatively)


# --- settings flow ---------------------------------------------------------------------


def _start(payload: dict[str, object]) -> client_events.InputStart:
    sid = new_id()
    env = envelope.Envelope(ev.INPUT_START, new_id(), sid, payload)
    start = client_events.parse(env, sid)
    assert isinstance(start, client_events.InputStart)
    return start


def test_turn_mode_semantic_on_the_wire_is_auto_with_the_model() -> None:
    start = _start({"samplingRate": 16000, "turnMode": "semantic", "silenceMs": 700})
    settings = CallSettings().with_input_start(start)
    assert settings.turn_mode == "auto" and settings.semantic_turns
    assert settings.end_silence_ms == 700
    auto = _start({"samplingRate": 16000, "turnMode": "auto"})
    assert not settings.with_input_start(auto).semantic_turns
    # An agent that wants it gets it on auto turns, not on push-to-talk.
    agent_wants = attrs.evolve(CallSettings(), turn=TurnPolicy(semantic=True))
    assert agent_wants.with_input_start(auto).semantic_turns
    manual = _start({"samplingRate": 16000})
    assert not agent_wants.with_input_start(manual).semantic_turns


def test_agent_turn_settings_reach_the_call_settings() -> None:
    book = parse_agents(
        """
[agents.clinic]
instructions = "You book appointments."
[agents.clinic.turn]
semantic = true
silence_ms = 900
semantic_threshold = 0.7
vad_threshold = 0.6
vad_neg_threshold = 0.4
vad_start_ms = 80
barge_in_min_words = 3
""",
        "agents.toml",
    )
    agent = book.agents["clinic"]
    policy = TurnPolicy(**dict(agent.turn))
    assert policy.semantic and policy.silence_ms == 900 and policy.semantic_threshold == 0.7
    assert (policy.vad_threshold, policy.vad_neg_threshold, policy.vad_start_ms) == (0.6, 0.4, 80)
    settings = CallSettings(16_000, turn_mode="auto", silence_ms=500, turn=policy)
    assert settings.semantic_turns and settings.end_silence_ms == 900
    with pytest.raises(Exception, match="semantic_threshold"):
        parse_agents(
            '[agents.a]\ninstructions = "x"\n[agents.a.turn]\nsemantic_threshold = 2\n', "a.toml"
        )


# --- the audio path's early end, with a scripted model ---------------------------------


def espeak(text: str) -> tuple[bytes, float]:
    speech = local_tts.synthesize_blocking(text)
    resampler = StreamResampler(local_tts._ESPEAK.sample_rate, RATE)
    pcm = resampler.process(speech.pcm) + resampler.flush()
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    hop = RATE // 100
    n = len(x) // hop
    rms = np.sqrt(np.mean(x[: n * hop].reshape(n, hop) ** 2, axis=1))
    loud = np.nonzero(rms > rms.max() * 0.01)[0]
    lo, hi = int(loud[0]) * hop, int(loud[-1] + 1) * hop
    return x[lo:hi].astype("<i2").tobytes(), (hi - lo) / RATE


class ScriptedModel:
    """Stands in for Smart Turn: a fixed probability; records where it ran."""

    def __init__(self, probability: float) -> None:
        self.probability = probability
        self.threads: list[bool] = []
        self.running = 0
        self.most_running = 0
        self.audio_lengths: list[int] = []
        self._lock = threading.Lock()

    def predict(self, pcm16: bytes) -> float:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        self.threads.append(threading.current_thread() is threading.main_thread())
        self.audio_lengths.append(len(pcm16))
        with self._lock:
            self.running -= 1
        return self.probability


INFERRING = [0]
"""Inferences in flight (the judge's, counted on the loop): the stream holds the
mock clock while there are any, as the real model would take real time."""


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Iterator[ScriptedModel]:
    model = ScriptedModel(0.9)
    monkeypatch.setattr(audio_path, "load_smart_turn", lambda: model)
    real = smart_turn.predict_off_loop

    async def counted(model: smart_turn.SmartTurnModel, pcm16: bytes) -> float:
        INFERRING[0] += 1
        try:
            return await real(model, pcm16)
        finally:
            INFERRING[0] -= 1

    monkeypatch.setattr(end_of_turn, "predict_off_loop", counted)
    yield model


async def stream(pcm: bytes, settings: CallSettings) -> list[tuple[float, TurnInput]]:
    audio_tx, audio_rx = trio.open_memory_channel[AudioItem](8)
    stt_tx, stt_rx = trio.open_memory_channel[SttItem](256)
    inbox_tx, inbox_rx = trio.open_memory_channel[TurnInput](64)
    inbox: list[tuple[float, TurnInput]] = []

    async def collect_inbox() -> None:
        async for item in inbox_rx:
            inbox.append((trio.current_time(), item))

    async def drain_stt() -> None:
        async for _ in stt_rx:
            pass

    step = 2 * RATE // 50
    async with trio.open_nursery() as nursery:
        nursery.start_soon(collect_inbox)
        nursery.start_soon(drain_stt)
        nursery.start_soon(run_audio_path, audio_rx, stt_tx, inbox_tx, settings)
        async with audio_tx:
            for i in range(0, len(pcm), step):
                await trio.sleep(0.02)
                # The worker thread takes real time the mock clock must not skip:
                # busy on purpose (a task blocked on an Event lets the clock jump).
                while INFERRING[0]:
                    await trio.lowlevel.checkpoint()
                await audio_tx.send(pcm[i : i + step])
    return inbox


SEMANTIC = CallSettings(
    RATE, turn_mode="auto", silence_ms=1000, vad="silero", turn=TurnPolicy(semantic=True)
)


async def _ends(scripted: ScriptedModel, settings: CallSettings) -> tuple[float, VoiceEnd]:
    speech, voice_s = espeak("Please cancel my appointment on Friday.")
    lead = 0.3
    inbox = await stream(
        bytes(2 * int(lead * RATE)) + speech + bytes(2 * int(1.6 * RATE)), settings
    )
    assert any(isinstance(x, VoiceStart) for _, x in inbox)
    ends = [(t, x) for t, x in inbox if isinstance(x, VoiceEnd)]
    assert len(ends) == 1, inbox
    t, end = ends[0]
    return t - (lead + voice_s), end  # seconds after the voice stopped


async def test_the_model_saying_done_ends_the_turn_long_before_the_silence(
    autojump_clock: trio.testing.MockClock, scripted: ScriptedModel
) -> None:
    after, end = await _ends(scripted, SEMANTIC)
    # hangover (~100 ms) + semantic_pause_ms (100) + a chunk or two for the verdict
    assert after < 0.4, after
    assert end.early_ms >= 600 and end.auto_end
    assert scripted.threads and not any(scripted.threads)  # never on the loop's thread
    assert scripted.most_running == 1
    assert all(n <= SAMPLES * 2 for n in scripted.audio_lengths)


async def test_the_model_saying_not_done_leaves_the_silence_to_end_it(
    autojump_clock: trio.testing.MockClock, scripted: ScriptedModel
) -> None:
    scripted.probability = 0.2
    after, end = await _ends(scripted, SEMANTIC)
    assert after >= 1.0 and end.early_ms == 0
    assert scripted.threads  # it was asked


async def test_without_semantic_the_model_is_not_asked(
    autojump_clock: trio.testing.MockClock, scripted: ScriptedModel
) -> None:
    after, end = await _ends(scripted, CallSettings(RATE, "en-US", None, "auto", 1000, "silero"))
    assert after >= 1.0 and end.early_ms == 0 and not scripted.threads


async def test_a_missing_model_falls_back_to_the_silence(
    autojump_clock: trio.testing.MockClock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def missing() -> smart_turn.SmartTurnModel:
        raise FileNotFoundError("Smart Turn v3.2 model not installed")

    monkeypatch.setattr(audio_path, "load_smart_turn", missing)
    monkeypatch.setattr(audio_path, "_semantic_warned", False)
    after, end = await _ends(ScriptedModel(1.0), SEMANTIC)
    assert after >= 1.0 and end.early_ms == 0
    assert "semantic end of turn unavailable" in caplog.text


# --- the real model ----------------------------------------------------------------------


@needs_model
def test_our_log_mel_is_pipecats() -> None:
    path = smart_turn.model_path().replace("data/smart-turn-v3.2-cpu.onnx", "_whisper_features.py")
    spec = importlib.util.spec_from_file_location("pipecat_whisper_features", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    audio = np.random.default_rng(3).standard_normal(50_000).astype(np.float32) * 0.1
    window = last_seconds(audio)
    reference = module.compute_whisper_log_mel_features(window, do_normalize=True)
    assert np.allclose(log_mel(window), reference, atol=1e-5)


@needs_model
async def test_smart_turn_runs_off_the_loop_without_stalling_it() -> None:
    """The issue's done-when for the end-of-turn model: while inferences run (in
    threads, under the process limiter) no event-loop step takes 10 ms of CPU."""
    model = await trio.to_thread.run_sync(smart_turn.load_smart_turn)
    speech, _ = espeak("I would like to book a table for two people tonight.")
    audio = speech + bytes(2 * RATE // 5)
    monitor = StallMonitor(threshold_s=0.010, log_stalls=False, clock=time.thread_time)
    results: list[float] = []

    async def ask() -> None:
        results.append(await smart_turn.predict_off_loop(model, audio))

    async def ticker() -> None:
        """Other work on the loop meanwhile (a call's audio every 5 ms)."""
        for _ in range(10_000):  # until cancelled: the inferences end first
            await trio.sleep(0.005)

    trio.lowlevel.add_instrument(monitor)
    try:
        async with trio.open_nursery() as outer:
            outer.start_soon(ticker)
            async with trio.open_nursery() as asks:
                for _ in range(3):
                    asks.start_soon(ask)
            outer.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(monitor)
    assert len(results) == 3 and all(0.0 <= p <= 1.0 for p in results)
    assert monitor.longest_s < 0.010, (monitor.longest_s, monitor.longest_task)
    assert monitor.steps > 3
