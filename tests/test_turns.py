"""The turn manager's pure state machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vantum.pipeline.events import ErrorEvent, TranscriptFinal
from vantum.pipeline.messages import InputEnded, InputStarted, TextTurn, VoiceStart
from vantum.pipeline.settings import CallSettings
from vantum.pipeline.turns import Emit, Respond, TurnState
from vantum.protocol import events as ev
from vantum.providers.base import FinalizeDone, TranscriptEvent, UtteranceEnd


def final(text: str, speech_final: bool = False) -> TranscriptEvent:
    return TranscriptEvent(text, is_final=True, speech_final=speech_final)


def test_manual_turn_closes_on_finalize_done_with_all_finals() -> None:
    s = TurnState()
    assert [type(a) for a in s.handle(TranscriptEvent("hel", is_final=False), 1.0)] == [Emit]
    s.handle(final("hello there"), 1.1)
    assert s.handle(InputEnded(2.0), 2.0) == []
    s.handle(final("general kenobi"), 2.1)  # flushed by Finalize, must not be lost
    actions = s.handle(FinalizeDone(), 2.2)
    assert len(actions) == 1 and isinstance(actions[0], Respond)
    req = actions[0].request
    assert req.text == "hello there general kenobi"
    assert req.timings.end_of_speech == 2.0 and req.timings.transcript_final == 2.2


def test_manual_mode_ignores_endpointing() -> None:
    s = TurnState()
    s.handle(final("hi", speech_final=True), 1.0)
    assert s.handle(UtteranceEnd(1.0), 1.1) == []


def test_empty_turn_asks_for_nothing() -> None:
    s = TurnState()
    s.handle(InputEnded(1.0), 1.0)
    assert s.handle(FinalizeDone(), 1.1) == []


def test_empty_turn_the_recogniser_never_finished_is_reported() -> None:
    s = TurnState()
    s.handle(InputEnded(1.0), 1.0)
    (action,) = s.handle(FinalizeDone(unanswered=True), 3.0)
    assert isinstance(action, Emit) and isinstance(action.event, ErrorEvent)
    assert (action.event.code, action.event.request) == (ev.ERR_STT, ev.INPUT_END)
    assert s.pending_ends == 0  # the turn is over: the next one starts clean


def test_unanswered_finalize_still_answers_the_words_that_came() -> None:
    s = TurnState()
    s.handle(final("hello there"), 1.0)
    s.handle(InputEnded(1.2), 1.2)
    (action,) = s.handle(FinalizeDone(unanswered=True), 3.2)
    assert isinstance(action, Respond) and action.request.text == "hello there"


def test_auto_mode_closes_on_speech_final() -> None:
    s = TurnState()
    s.handle(InputStarted(CallSettings(16_000, turn_mode="auto"), 0.0), 0.0)
    actions = s.handle(final("book a table", speech_final=True), 3.0)
    kinds = [type(a.event) if isinstance(a, Emit) else "respond" for a in actions]
    assert kinds == [TranscriptFinal, "respond"]


def test_transcripts_carry_the_language_of_the_call_settings() -> None:
    s = TurnState(CallSettings(16_000, language="es-ES"))
    (emit,) = s.handle(TranscriptEvent("hola", is_final=True, language=""), 1.0)
    assert isinstance(emit, Emit) and isinstance(emit.event, TranscriptFinal)
    assert emit.event.language == "es-ES"


def test_text_turn_responds_immediately() -> None:
    (action,) = TurnState().handle(TextTurn("hi", 5.0), 5.0)
    assert isinstance(action, Respond) and action.request.text == "hi"


@given(st.lists(st.tuples(st.sampled_from(["w1", "w2", "w3", ""]), st.booleans()), max_size=20))
def test_every_final_word_reaches_exactly_one_request(items: list[tuple[str, bool]]) -> None:
    s = TurnState()
    said: list[str] = []
    asked: list[str] = []
    for i, (word, end_here) in enumerate(items):
        s.handle(final(word), float(i))
        if word:
            said.append(word)
        if end_here:
            s.handle(InputEnded(float(i)), float(i))
            for a in s.handle(FinalizeDone(), float(i)):
                if isinstance(a, Respond):
                    asked.extend(a.request.text.split())
    s.handle(InputEnded(99.0), 99.0)
    for a in s.handle(FinalizeDone(), 99.0):
        if isinstance(a, Respond):
            asked.extend(a.request.text.split())
    assert asked == said


def test_long_speech_counts_only_the_speech_over_the_bot() -> None:
    """A caller still finishing a sentence when an early answer starts has not talked
    over it for the time before it started (the STT's endpointing can end a turn
    before the VAD does)."""
    s = TurnState(CallSettings(16_000, turn_mode="auto"))
    s.handle(VoiceStart(0.0), 0.0)
    assert not s.long_speech_interrupts(1.6, bot_speaking_since=1.0)  # 0.6 s over the bot
    assert s.long_speech_interrupts(2.5, bot_speaking_since=1.0)  # 1.5 s over the bot
    assert not s.long_speech_interrupts(2.5, bot_speaking_since=None)
