"""The turn manager's answer bookkeeping: one answer in flight, a bounded queue."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantum.pipeline.answer_queue import AnswerQueue, QueueFull
from vantum.pipeline.messages import TurnRequest, TurnTimings


def request(text: str) -> TurnRequest:
    return TurnRequest(text, TurnTimings())


def test_one_answer_at_a_time_in_order() -> None:
    q = AnswerQueue(limit=2)
    assert q.submit(request("a")) == request("a")  # handed over at once
    assert q.submit(request("b")) is None and q.submit(request("c")) is None
    with pytest.raises(QueueFull):
        q.submit(request("d"))
    q.audible(1.0)
    assert q.speaking and q.busy
    assert q.finished() == request("b") and not q.speaking
    assert q.finished() == request("c")
    assert q.finished() is None and not q.busy


def test_hang_up_comes_once_after_the_goodbye() -> None:
    q = AnswerQueue()
    q.submit(request("goodbye"))
    q.hang_up_after_queue("idle")
    assert q.take_hangup() is None  # the goodbye is still being spoken
    q.finished()
    assert q.take_hangup() == "idle"
    assert q.take_hangup() is None


@given(st.lists(st.sampled_from(["submit", "finish", "drop"]), max_size=40))
def test_every_request_is_handed_over_dropped_or_refused_exactly_once(ops: list[str]) -> None:
    q = AnswerQueue(limit=3)
    handed: list[str] = []
    dropped: list[str] = []
    refused: list[str] = []
    made: list[str] = []
    for i, op in enumerate(ops):
        if op == "submit":
            made.append(str(i))
            try:
                now = q.submit(request(str(i)))
            except QueueFull:
                refused.append(str(i))
                continue
            if now is not None:
                handed.append(now.text)
        elif op == "finish" and q.in_flight:
            following = q.finished()
            if following is not None:
                handed.append(following.text)
        elif op == "drop":
            dropped.extend(r.text for r in q.drop_pending())
    waiting = [r.text for r in q.pending]
    assert sorted(handed + dropped + refused + waiting, key=int) == made
    assert handed == sorted(handed, key=int)  # handed over in the order asked


@given(st.lists(st.tuples(st.sampled_from(["submit", "finish"]), st.booleans()), max_size=40))
def test_interruptible_is_the_flag_of_the_answer_in_flight(
    steps: list[tuple[str, bool]],
) -> None:
    """A greeting that must not be cut stays uncuttable exactly while it is in flight."""
    q = AnswerQueue(limit=50)
    order: list[bool] = []  # flags of the answers handed over or waiting, in order
    for step, flag in steps:
        if step == "submit":
            q.submit(TurnRequest("x", TurnTimings(), interruptible=flag))
            order.append(flag)
        elif q.in_flight:
            q.finished()
            order.pop(0)
        assert q.interruptible is (order[0] if order else True)
