"""Structured logging: ids follow a call's tasks, and both formats render them."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from vantum.logs import (
    BoundFieldsFilter,
    JsonFormatter,
    TextFormatter,
    annotate,
    bind,
    configure_logging,
    current_fields,
)

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Capture:
    """A logger whose records go, through the real filter and a formatter, to a buffer."""

    def __init__(self, formatter: logging.Formatter, name: str = "vantum.test.logs") -> None:
        self.buf = io.StringIO()
        self.handler = logging.StreamHandler(self.buf)
        self.handler.addFilter(BoundFieldsFilter())
        self.handler.setFormatter(formatter)
        # A logger outside logging's registry: pytest's capture handlers can't join it.
        self.log = logging.Logger(name, logging.DEBUG)
        self.log.addHandler(self.handler)

    def lines(self) -> list[str]:
        return self.buf.getvalue().splitlines()

    def json(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def cap() -> Capture:
    return Capture(JsonFormatter())


async def test_child_tasks_inherit_their_sessions_ids_only(cap: Capture) -> None:
    both_started = trio.Event()
    started = 0

    async def actor(session: str, n: int) -> None:
        nonlocal started
        started += 1
        if started == 4:
            both_started.set()
        await both_started.wait()  # every actor of both sessions runs interleaved
        cap.log.info("actor %d of %s", n, session)

    async def session(sid: str) -> None:
        with bind(session_id=sid, transport="browser"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(actor, sid, 1)
                nursery.start_soon(actor, sid, 2)

    async with trio.open_nursery() as outer:
        outer.start_soon(session, "A")
        outer.start_soon(session, "B")
    cap.log.info("after")

    records = cap.json()
    assert len(records) == 5
    for rec in records[:4]:
        assert isinstance(rec["msg"], str)
        assert rec["msg"].endswith(f"of {rec['session_id']}")
        assert rec["transport"] == "browser"
    assert sorted(str(r["session_id"]) for r in records[:4]) == ["A", "A", "B", "B"]
    assert "session_id" not in records[4]


async def test_annotate_reaches_tasks_already_running(cap: Capture) -> None:
    """Twilio's callSid arrives after the session's actors started."""
    learned = trio.Event()

    async def early_actor() -> None:
        await learned.wait()
        cap.log.info("early")

    async def other_session() -> None:
        with bind(session_id="other"):
            await learned.wait()
            cap.log.info("other")

    async with trio.open_nursery() as outer:
        outer.start_soon(other_session)
        with bind(session_id="s1"):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(early_actor)
                await trio.testing.wait_all_tasks_blocked()
                annotate(call_sid="CA123")
                learned.set()

    by_msg = {r["msg"]: r for r in cap.json()}
    assert by_msg["early"]["call_sid"] == "CA123"
    assert by_msg["early"]["session_id"] == "s1"
    assert "call_sid" not in by_msg["other"]


def test_bind_nests_skips_none_and_restores() -> None:
    assert current_fields() == {}
    with bind(session_id="s", call_sid=None):
        assert current_fields() == {"session_id": "s"}
        with bind(call_sid="CA1", session_id="s2"):
            assert current_fields() == {"session_id": "s2", "call_sid": "CA1"}
        assert current_fields() == {"session_id": "s"}
    assert current_fields() == {}
    annotate(call_sid="ignored")  # no call to attach it to
    assert current_fields() == {}


@pytest.mark.parametrize("name", ["msg", "args", "levelname", "message", "vantum_fields"])
def test_bind_refuses_logging_attribute_names(name: str) -> None:
    with pytest.raises(ValueError, match="reserved"), bind(**{name: "x"}):
        pass


def test_json_line_has_core_fields_bound_fields_extras_and_traceback(cap: Capture) -> None:
    with bind(session_id="s9", call_sid="CA9"):
        try:
            raise RuntimeError("provider fell over")
        except RuntimeError:
            cap.log.exception("turn %d failed", 3, extra={"stage": "tts", "ms": 12.5})
    (rec,) = cap.json()
    assert TS.match(str(rec["ts"]))
    assert rec["level"] == "ERROR"
    assert rec["logger"] == "vantum.test.logs"
    assert rec["msg"] == "turn 3 failed"
    assert (rec["session_id"], rec["call_sid"]) == ("s9", "CA9")
    assert (rec["stage"], rec["ms"]) == ("tts", 12.5)
    assert "Traceback" in str(rec["exc"])
    assert "RuntimeError: provider fell over" in str(rec["exc"])


def test_explicit_extra_wins_over_bound_field(cap: Capture) -> None:
    with bind(session_id="bound"):
        cap.log.info("x", extra={"session_id": "explicit"})
    assert cap.json()[0]["session_id"] == "explicit"


class Unprintable:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_json_never_raises_on_awkward_values(cap: Capture) -> None:
    cap.log.info(
        "odd",
        extra={"obj": object(), "nan": float("nan"), "ts": "mine", "bad": Unprintable()},
    )
    cap.log.info("%d apples", "not a number")  # a broken log call still logs
    first, second = cap.json()
    assert str(first["obj"]).startswith("<object object")
    assert first["nan"] == "nan"
    assert first["_ts"] == "mine" and TS.match(str(first["ts"]))
    assert first["bad"] == "<unrepresentable Unprintable>"
    assert "not a number" in str(second["msg"])


@given(
    msg=st.text(),
    extras=st.dictionaries(
        st.text(min_size=1).map(lambda k: "x_" + k),
        st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(), st.binary()),
        max_size=5,
    ),
)
def test_json_formatter_always_emits_one_parseable_line(
    msg: str, extras: dict[str, object]
) -> None:
    record = logging.LogRecord("vantum.x", logging.INFO, __file__, 1, msg, None, None)
    record.__dict__.update(extras)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert parsed["msg"] == msg
    assert set(extras) <= parsed.keys()


def test_text_format_appends_bound_ids() -> None:
    cap = Capture(TextFormatter(), name="vantum.test.text")
    cap.log.warning("plain")
    with bind(session_id="s1", call_sid="CA1", transport="twilio"):
        try:
            raise ValueError("boom")
        except ValueError:
            cap.log.exception("with ids")
    lines = cap.lines()
    assert lines[0].endswith("WARNING vantum.test.text: plain")
    assert lines[1].endswith(
        "ERROR vantum.test.text: with ids [session=s1 call=CA1 transport=twilio]"
    )
    assert lines[2] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: boom"


@pytest.fixture
def clean_root() -> Iterator[logging.Logger]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield root
    root.handlers = handlers
    root.setLevel(level)


def test_configure_logging_is_idempotent_and_switches_format(clean_root: logging.Logger) -> None:
    before = len(clean_root.handlers)
    first, second = io.StringIO(), io.StringIO()
    configure_logging("debug", "text", stream=first)
    configure_logging("info", "json", stream=second)
    assert len(clean_root.handlers) == before + 1
    assert clean_root.level == logging.INFO
    with bind(session_id="s1"):
        logging.getLogger("vantum.session").info("hello %s", "world")
        logging.getLogger("vantum.session").debug("not at INFO")
    assert first.getvalue() == ""
    (line,) = second.getvalue().splitlines()
    rec = json.loads(line)
    assert (rec["msg"], rec["session_id"], rec["logger"]) == ("hello world", "s1", "vantum.session")


def test_configure_logging_rejects_unknown_format(clean_root: logging.Logger) -> None:
    with pytest.raises(ValueError, match="text, json"):
        configure_logging("INFO", "yaml")  # type: ignore[arg-type]
