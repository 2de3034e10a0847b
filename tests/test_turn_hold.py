"""Pause, then confirm: the turn state's hold of an answer while caller speech is judged.

Pure: TurnState is driven directly with virtual instants (issue 20, item 5).
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vantum.pipeline.messages import (
    AnswerAudible,
    HoldExpired,
    InputStarted,
    Interrupt,
    Pause,
    ResponseFinished,
    Resume,
    TextTurn,
    TurnInput,
    VoiceEnd,
    VoiceStart,
    VoiceSustained,
)
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.pipeline.turn_state import Action, Emit, Respond, TurnState
from vantum.providers.base import FinalizeDone, TranscriptEvent

AUTO = CallSettings(16_000, turn_mode="auto")
CONFIRM_S = AUTO.turn.barge_in_confirm_ms / 1000 if AUTO.turn.barge_in_confirm_ms else 0.0


def interim(text: str) -> TranscriptEvent:
    return TranscriptEvent(text, is_final=False)


def control(actions: list[Action]) -> list[Action]:
    """The floor decisions among ``actions`` (transcript emits aside)."""
    return [a for a in actions if not isinstance(a, Emit)]


def speaking(settings: CallSettings = AUTO) -> TurnState:
    """A turn state whose answer is playing (audible since t=0)."""
    s = TurnState(settings)
    s.handle(AnswerAudible(0.0), 0.0, True, True)
    return s


def test_speech_over_the_answer_pauses_it_at_once() -> None:
    s = speaking()
    assert s.handle(VoiceStart(1.0), 1.0, True, True) == [Pause()]
    assert s.hold is not None and s.hold_deadline == 1.0 + CONFIRM_S
    # More speech while held does not pause again.
    s.handle(VoiceEnd(1.2, 150, True), 1.2, True, True)
    assert s.handle(VoiceStart(1.3), 1.3, True, True) == []


def test_unconfirmed_speech_resumes_at_the_deadline_and_not_before() -> None:
    s = speaking()
    s.handle(VoiceStart(1.0), 1.0, True, True)
    # A cough: 150 ms of VAD speech, one word. Not a barge-in.
    s.handle(VoiceEnd(1.7, 150, True), 1.7, True, True)
    assert control(s.handle(interim("mm"), 1.75, True, True)) == []
    assert s.handle(HoldExpired(1.0 + CONFIRM_S - 0.01), 1.79, True, True) == []
    assert s.handle(HoldExpired(1.0 + CONFIRM_S), 1.0 + CONFIRM_S, True, True) == [Resume()]
    assert s.hold is None
    # A late expiry (already resumed) does nothing.
    assert s.handle(HoldExpired(5.0), 5.0, True, True) == []


def test_confirmed_barge_in_while_held_interrupts_and_never_resumes() -> None:
    s = speaking()
    s.handle(VoiceStart(1.0), 1.0, True, True)
    s.handle(VoiceSustained(1.3, 200), 1.3, True, True)
    assert control(s.handle(interim("no stop"), 1.5, True, True)) == [Interrupt("barge_in")]
    assert s.hold is None and s.hold_deadline == float("inf")
    assert s.handle(HoldExpired(2.0), 2.0, True, True) == []


def test_speech_before_the_first_audio_holds_the_pending_answer() -> None:
    """Issue 20 item 5: the caller talks again after the end of turn, before the
    answer's audio: the answer is held (not started over the caller), and cut if the
    speech is a barge-in."""
    s = TurnState(AUTO)
    # An answer is in flight (thinking), nothing audible yet.
    assert s.handle(VoiceStart(1.0), 1.0, False, True) == [Pause()]
    s.handle(VoiceSustained(1.3, 200), 1.3, False, True)
    # Its first audio was already on the way when the pause landed: what was said
    # before it still counts towards the barge-in.
    s.handle(AnswerAudible(1.35), 1.35, True, True)
    assert control(s.handle(interim("and also"), 1.5, True, True)) == [Interrupt("barge_in")]


def test_no_answer_in_flight_no_pause() -> None:
    s = TurnState(AUTO)
    assert s.handle(VoiceStart(1.0), 1.0, False, False) == []
    assert s.hold is None


def test_manual_mode_and_disabled_settings_do_not_pause() -> None:
    manual = speaking(CallSettings(16_000, turn_mode="manual"))
    assert manual.handle(VoiceStart(1.0), 1.0, True, True) == []
    off = speaking(CallSettings(16_000, turn_mode="auto", turn=TurnPolicy(barge_in=False)))
    assert off.handle(VoiceStart(1.0), 1.0, True, True) == []
    no_window = TurnPolicy(barge_in_confirm_ms=None)
    old = speaking(CallSettings(16_000, turn_mode="auto", turn=no_window))
    assert old.handle(VoiceStart(1.0), 1.0, True, True) == []


def test_the_answer_ending_while_held_clears_the_hold() -> None:
    s = speaking()
    s.handle(VoiceStart(1.0), 1.0, True, True)
    s.handle(ResponseFinished(1.2), 1.2, True, True)
    assert s.hold is None
    assert s.handle(HoldExpired(2.0), 2.0, False, False) == []


def test_a_typed_turn_or_a_new_input_start_cuts_a_held_answer() -> None:
    for item in (TextTurn("hi", 1.5), InputStarted(AUTO, 1.5)):
        s = TurnState(AUTO)
        s.handle(VoiceStart(1.0), 1.0, False, True)
        acts = s.handle(item, 1.5, False, True)
        assert acts[0] == Interrupt("text_input" if isinstance(item, TextTurn) else "input_start")
        assert s.hold is None


def test_a_held_speculative_answer_cut_by_a_barge_in_is_answered_from_the_text() -> None:
    """The caller goes on after a pause in their sentence: the speculative answer
    guessed from the first half is held, then cut; the whole turn is answered."""
    s = TurnState(AUTO)
    s.handle(VoiceStart(0.0), 0.0)
    s.handle(TranscriptEvent("book a table", is_final=True), 0.8)
    (guess,) = s.handle(VoiceEnd(1.0, 900, True), 1.0)
    assert isinstance(guess, Respond) and guess.request.gate is not None
    gate = guess.request.gate
    assert s.handle(VoiceStart(1.2), 1.2, False, True) == [Pause()]
    s.handle(VoiceSustained(1.5, 200), 1.5, False, True)
    assert control(s.handle(interim("for two"), 1.6, False, True)) == [Interrupt("barge_in")]
    assert not gate.accepted
    s.handle(TranscriptEvent("for two", is_final=True), 1.9, False, True)
    (respond,) = control(s.handle(FinalizeDone(), 2.0, False, False))
    assert isinstance(respond, Respond) and respond.request.text == "book a table for two"


EVENTS = st.sampled_from(
    ["voice_start", "voice_end", "sustained", "one_word", "two_words", "tick", "finished"]
)


@given(st.lists(st.tuples(EVENTS, st.floats(0.0, 0.5)), max_size=40))
def test_every_pause_is_followed_by_exactly_one_resume_or_interrupt(
    script: list[tuple[str, float]],
) -> None:
    """For any ordering of VAD, transcripts and timer ticks over one answer: pauses
    and their outcomes alternate, a hold never outlives its window (a tick at the
    deadline always releases it), and nothing resumes what was not paused."""
    s = speaking()
    now = 0.0
    held = False
    finished = False
    for kind, step in script:
        now += step
        item: TurnInput
        if kind == "voice_start":
            item = VoiceStart(now)
        elif kind == "voice_end":
            item = VoiceEnd(now, 100, True)
        elif kind == "sustained":
            item = VoiceSustained(now, 200)
        elif kind == "one_word":
            item = interim("mm")
        elif kind == "two_words":
            item = interim("stop now")
        elif kind == "tick":
            item = HoldExpired(now)
        else:
            item = ResponseFinished(now)
        answering = not finished
        for action in control(s.handle(item, now, answering, answering)):
            if isinstance(action, Pause):
                assert not held and not finished
                held = True
            elif isinstance(action, Resume):
                assert held
                held = False
            elif isinstance(action, Interrupt):
                held = False
        if kind == "finished":
            finished, held = True, False
        assert (s.hold is not None) == held
        if held:
            assert s.hold is not None and s.hold.until <= now + CONFIRM_S + 1e-9
            deadline = s.hold.until
            if deadline <= now:  # due: the actor ticks, and that releases it
                assert s.handle(HoldExpired(now), now, True, True) == [Resume()]
                held = False
