"""The turn manager's pure state machine."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vantum.pipeline.messages import InputEnded, ModeChanged, TextTurn
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


def test_auto_mode_closes_on_speech_final() -> None:
    s = TurnState()
    s.handle(ModeChanged("auto", "en-US"), 0.0)
    actions = s.handle(final("book a table", speech_final=True), 3.0)
    kinds = [a.event.event_type if isinstance(a, Emit) else "respond" for a in actions]
    assert kinds == [ev.TRANSCRIPT_FINAL, "respond"]


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
