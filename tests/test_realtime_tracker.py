"""The response tracker's truncation plan, over any interleaving of audio deltas."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vantum.providers.realtime import codec as rc
from vantum.providers.realtime.tracker import ResponseTracker

RESP = "resp_1"
RATE = rc.PCM_RATE


@st.composite
def responses(draw: st.DrawFn) -> tuple[ResponseTracker, list[tuple[str, int]], set[str]]:
    """A tracker fed a response of 1-3 audio items whose deltas arrive interleaved."""
    count = draw(st.integers(1, 3))
    item_ids = [f"item_{i}" for i in range(count)]
    tracker = ResponseTracker(RESP)
    for i, item_id in enumerate(item_ids):
        tracker.feed(rc.OutputItemAdded(RESP, i, item_id, "message"))
    deltas = draw(st.lists(st.tuples(st.sampled_from(item_ids), st.integers(0, 4800)), max_size=12))
    for item_id, samples in deltas:
        tracker.feed(rc.AudioDelta(RESP, item_id, 0, 0, b"\0\0" * samples))
        tracker.feed(rc.TranscriptDelta(RESP, item_id, 0, 0, "word "))
    done = set(draw(st.lists(st.sampled_from(item_ids), unique=True)))
    for item_id in done:
        tracker.feed(rc.AudioDone(RESP, item_id, 0, 0))
    return tracker, deltas, done


@given(responses(), st.floats(0, 2.0))
def test_truncation_never_passes_the_produced_audio_nor_truncates_at_zero(
    response: tuple[ResponseTracker, list[tuple[str, int]], set[str]], heard_s: float
) -> None:
    tracker, _, done = response
    plan = tracker.plan_cut(heard_s)
    for cut in plan.cuts:
        item = tracker.items[cut.item_id]
        if isinstance(cut, rc.ItemTruncate):
            assert 0 < cut.audio_end_ms <= item.produced_ms - 1
    untouched = set(tracker.items) - {c.item_id for c in plan.cuts}
    for item_id in untouched:
        assert item_id in done  # only a complete item may be left whole...
        assert plan.heard_ms[item_id] == tracker.items[item_id].produced_ms  # ...fully heard


@given(responses(), st.floats(0, 2.0))
def test_what_is_kept_is_what_was_heard_within_a_millisecond_per_item(
    response: tuple[ResponseTracker, list[tuple[str, int]], set[str]], heard_s: float
) -> None:
    tracker, deltas, _ = response
    plan = tracker.plan_cut(heard_s)
    # Recompute independently: walk the deltas in arrival order with the heard budget.
    budget = int(heard_s * RATE)
    heard = dict.fromkeys(tracker.items, 0)
    for item_id, samples in deltas:
        take = min(samples, budget)
        heard[item_id] += take
        budget -= take
    for item_id, item in tracker.items.items():
        expected_ms = heard[item_id] * 1000 // RATE
        kept = plan.heard_ms[item_id]
        assert kept <= max(expected_ms, 0)
        # At most the 1 ms guard, or an item of which under 1 ms would have been kept.
        assert expected_ms - kept <= 1 or (kept == 0 and expected_ms <= 1)
        if heard[item_id] == 0:
            assert rc.ItemDelete(item_id) in plan.cuts  # never reached: deleted
        assert kept <= item.produced_ms


def test_two_items_cut_inside_the_second_and_a_third_never_reached() -> None:
    tracker = ResponseTracker(RESP)
    for i in range(3):
        tracker.feed(rc.OutputItemAdded(RESP, i, f"it{i}", "message"))
    tracker.feed(rc.AudioDelta(RESP, "it0", 0, 0, b"\0\0" * RATE))  # 1000 ms
    tracker.feed(rc.TranscriptDone(RESP, "it0", 0, 0, "first item"))
    tracker.feed(rc.AudioDone(RESP, "it0", 0, 0))
    tracker.feed(rc.AudioDelta(RESP, "it1", 0, 0, b"\0\0" * RATE))  # 1000 ms, still coming
    plan = tracker.plan_cut(1.25)
    assert plan.cuts == (rc.ItemTruncate("it1", 250), rc.ItemDelete("it2"))
    assert plan.heard_ms == {"it0": 1000, "it1": 250, "it2": 0}


def test_heard_to_the_end_of_an_unfinished_item_cuts_at_produced_minus_one() -> None:
    tracker = ResponseTracker(RESP)
    tracker.feed(rc.OutputItemAdded(RESP, 0, "it0", "message"))
    tracker.feed(rc.AudioDelta(RESP, "it0", 0, 0, b"\0\0" * 2400))  # 100 ms
    assert tracker.plan_cut(5.0).cuts == (rc.ItemTruncate("it0", 99),)
    assert tracker.plan_cut(0.0).cuts == (rc.ItemDelete("it0"),)


def test_events_of_other_responses_are_ignored() -> None:
    tracker = ResponseTracker(RESP)
    tracker.feed(rc.OutputItemAdded("resp_2", 0, "x", "message"))
    tracker.feed(rc.AudioDelta("resp_2", "x", 0, 0, b"\0\0" * 100))
    assert tracker.items == {}
    assert tracker.produced_samples == 0
