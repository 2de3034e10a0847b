"""Turn spans rebuilt from ``metrics.turn``; tracing setup from the environment.

The span tests need the OpenTelemetry SDK and skip without it; the setup tests run
either way (Vantum must work, with tracing off, when the SDK is absent).
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest

from vantum.pipeline import events as e
from vantum.pipeline.events import ServerEvent
from vantum.protocol import events as ev
from vantum.server.tracing import TurnTracer, make_tracer, tracing_enabled

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

MS = 1_000_000  # ns


class Recorder:
    def __init__(self) -> None:
        self.events: list[ServerEvent] = []

    def on_event(self, event: ServerEvent) -> None:
        self.events.append(event)


class Clock:
    """Wall clock in ns that the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_700_000_000_000 * MS

    def __call__(self) -> int:
        return self.now

    def advance(self, ms: float) -> None:
        self.now += round(ms * MS)


class Rig:
    def __init__(self) -> None:
        pytest.importorskip("opentelemetry.sdk")
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
            InMemorySpanExporter,
        )

        self.exporter: InMemorySpanExporter = InMemorySpanExporter()
        provider = TracerProvider()  # local: the global provider is never set
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.clock = Clock()
        self.also = Recorder()
        self.sent: list[ServerEvent] = []
        self.tracer = TurnTracer(
            provider.get_tracer("test"), "sess-1", "twilio", self.also, clock=self.clock
        )

    def send(self, event: ServerEvent) -> None:
        self.sent.append(event)
        self.tracer.on_event(event)

    def answer(
        self,
        metrics: dict[str, Any],
        *,
        uid: str = "u1",
        audio: bool = True,
        cancel: bool = False,
        error: str | None = None,
    ) -> None:
        """One answer as egress sees it; first audio goes out ``voiceToVoiceMs`` after
        an end of speech that is ``now`` when called."""
        v2v = metrics.get("voice_to_voice_ms") or 0.0
        self.clock.advance(v2v - 5)
        self.send(e.ResponseStarted(uid, 0))
        if error is not None:
            self.send(e.ErrorEvent(error, "it broke", "turn"))
        self.clock.advance(5)
        if audio:
            self.send(e.OutputStarted(uid, 0))
            self.send(e.OutputChunk(uid, b"\0\0", 16_000))
            self.clock.advance(40)
            self.send(e.OutputChunk(uid, b"\0\0", 16_000))
            self.clock.advance(900)  # playback of the rest of the answer
            self.send(e.OutputCancelled(uid, "barge_in") if cancel else e.OutputComplete(uid))
        self.send(e.ResponseComplete(uid))
        self.send(e.TurnMetrics(uid, **metrics))

    def spans(self) -> Sequence[ReadableSpan]:
        return self.exporter.get_finished_spans()


@pytest.fixture
def rig() -> Iterator[Rig]:
    yield Rig()


def metrics(
    stt: float | None = 120.0,
    llm: float | None = 300.0,
    tts: float | None = 150.0,
    egress: float | None = 30.0,
    speculative: bool = False,
) -> dict[str, Any]:
    """Keyword arguments of a :class:`TurnMetrics` (all but the utterance id)."""
    parts = [stt, llm, tts, egress]
    return {
        "end_of_speech_to_final_ms": stt,
        "final_to_llm_first_token_ms": llm,
        "llm_first_token_to_tts_first_audio_ms": tts,
        "tts_first_audio_to_first_audio_sent_ms": egress,
        "voice_to_voice_ms": None if None in parts else round(sum(p or 0 for p in parts), 1),
        "speculative": speculative,
    }


def ms(ns: int | None) -> float:
    assert ns is not None
    return ns / MS


def test_turn_span_with_stage_children_laid_end_to_end(rig: Rig) -> None:
    end_of_speech = rig.clock.now
    rig.answer(metrics())
    *children, turn = rig.spans()
    assert turn.name == "vantum.turn"
    assert [c.name for c in children] == [
        "stt.final",
        "llm.first_token",
        "tts.first_audio",
        "egress",
    ]
    # The turn ends with the first audio chunk, not when metrics.turn arrived.
    assert ms(turn.start_time) == pytest.approx(ms(end_of_speech), abs=1)
    assert ms(turn.end_time) - ms(turn.start_time) == pytest.approx(600.0, abs=1)
    assert turn.parent is None
    cursor = turn.start_time
    for child, expected in zip(children, (120.0, 300.0, 150.0, 30.0), strict=True):
        assert child.parent is not None and turn.context is not None
        assert child.parent.span_id == turn.context.span_id
        assert child.context is not None and child.context.trace_id == turn.context.trace_id
        assert child.start_time == cursor
        assert ms(child.end_time) - ms(child.start_time) == pytest.approx(expected, abs=1)
        assert child.attributes is not None and child.attributes["vantum.stage_ms"] == expected
        cursor = child.end_time
    assert ms(cursor) == pytest.approx(ms(turn.end_time), abs=1)
    assert dict(turn.attributes or {}) == {
        "vantum.session_id": "sess-1",
        "vantum.transport": "twilio",
        "vantum.turn.index": 1,
        "vantum.turn.speculative": False,
        "vantum.turn.interrupted": False,
        "vantum.utterance_id": "u1",
        "vantum.turn.voice_to_voice_ms": 600.0,
        "vantum.turn.stt_final_ms": 120.0,
        "vantum.turn.llm_first_token_ms": 300.0,
        "vantum.turn.tts_first_audio_ms": 150.0,
        "vantum.turn.egress_ms": 30.0,
    }
    assert rig.also.events == rig.sent


def test_turns_are_numbered_and_interruptions_marked(rig: Rig) -> None:
    rig.answer(metrics(), uid="u1")
    rig.answer(metrics(), uid="u2", cancel=True)
    turns = [s for s in rig.spans() if s.name == "vantum.turn"]
    got = [
        (t.attributes["vantum.turn.index"], t.attributes["vantum.turn.interrupted"])
        for t in turns
        if t.attributes is not None
    ]
    assert got == [(1, False), (2, True)]
    assert turns[0].context is not None and turns[1].context is not None
    assert turns[0].context.trace_id != turns[1].context.trace_id


def test_speculative_turn_with_llm_ahead_of_final_transcript(rig: Rig) -> None:
    """The LLM started on the interim text, so its stage is negative."""
    m = metrics(stt=200.0, llm=-50.0, tts=150.0, egress=30.0, speculative=True)
    rig.answer(m)
    *children, turn = rig.spans()
    assert turn.attributes is not None and turn.attributes["vantum.turn.speculative"] is True
    llm = children[1]
    assert ms(llm.end_time) - ms(llm.start_time) == pytest.approx(50.0, abs=1)
    assert llm.end_time == children[0].end_time  # it overlaps the end of stt.final
    assert ms(turn.end_time) - ms(turn.start_time) == pytest.approx(330.0, abs=1)
    for child in children:
        assert child.start_time is not None and turn.start_time is not None
        assert child.end_time is not None and turn.end_time is not None
        assert turn.start_time <= child.start_time <= child.end_time <= turn.end_time


def test_failed_tts_turn_keeps_known_stages_and_the_error(rig: Rig) -> None:
    rig.answer(metrics(tts=None, egress=None), audio=False, error=ev.ERR_TTS)
    *children, turn = rig.spans()
    assert [c.name for c in children] == ["stt.final", "llm.first_token"]
    assert ms(turn.end_time) - ms(turn.start_time) == pytest.approx(420.0, abs=1)
    assert turn.attributes is not None
    assert "vantum.turn.voice_to_voice_ms" not in turn.attributes
    assert "vantum.turn.interrupted" not in turn.attributes  # no audio: not known
    assert turn.attributes["vantum.turn.errors"] == 1
    (event,) = turn.events
    assert event.name == "tts.error.synthesis"
    assert event.attributes is not None
    assert event.attributes["vantum.error.message"] == "it broke"
    assert event.attributes["vantum.error.request_type"] == "turn"
    from opentelemetry.trace import StatusCode

    assert turn.status.status_code is StatusCode.ERROR
    assert turn.status.description == "tts.error.synthesis"


def test_caller_errors_mark_the_turn_but_do_not_fail_it(rig: Rig) -> None:
    from opentelemetry.trace import StatusCode

    rig.answer(metrics(), error=ev.ERR_RATE)
    turn = rig.spans()[-1]
    assert [e.name for e in turn.events] == [ev.ERR_RATE]
    assert turn.status.status_code is StatusCode.UNSET


def test_error_between_answers_is_its_own_span(rig: Rig) -> None:
    from opentelemetry.trace import StatusCode

    rig.answer(metrics())
    rig.clock.advance(1000)
    rig.send(e.ErrorEvent(ev.ERR_STT, "socket closed", "audio"))
    span = rig.spans()[-1]
    assert span.name == "vantum.error"
    assert span.start_time == span.end_time == rig.clock.now
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes is not None
    assert span.attributes["vantum.error.type"] == ev.ERR_STT
    assert span.attributes["vantum.session_id"] == "sess-1"
    # ...and it does not leak into the next turn.
    rig.answer(metrics(), uid="u2")
    assert rig.spans()[-1].events == ()


def test_errors_per_turn_are_bounded(rig: Rig) -> None:
    rig.send(e.ResponseStarted("u1", 0))
    for _ in range(100):
        rig.send(e.ErrorEvent(ev.ERR_RATE, "too fast"))
    rig.send(e.TurnMetrics("u1", **metrics()))
    turn = rig.spans()[-1]
    assert len(turn.events) == 32
    assert turn.attributes is not None and turn.attributes["vantum.turn.errors"] == 100


class BrokenTracer:
    def start_span(self, *args: object, **kwargs: object) -> None:
        raise RuntimeError("exporter on fire")


def test_a_failing_tracer_never_reaches_the_call(caplog: pytest.LogCaptureFixture) -> None:
    also = Recorder()
    tracer = TurnTracer(BrokenTracer(), "s", "browser", also)  # type: ignore[arg-type]
    events: list[ServerEvent] = [e.TurnMetrics("u", **metrics()) for _ in range(3)]
    with caplog.at_level(logging.ERROR, "vantum.tracing"):
        for event in events:
            tracer.on_event(event)
    assert also.events == events
    assert len([r for r in caplog.records if "tracing failed" in r.message]) == 1


# --- setup from the environment ----------------------------------------------------


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"VANTUM_OTEL": "1"}, True),
        ({"VANTUM_OTEL": "console"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"VANTUM_OTEL": "0", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ],
)
def test_tracing_is_on_only_when_asked_and_possible(
    env: dict[str, str], wanted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    assert tracing_enabled(env) is wanted
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    assert tracing_enabled(env) is False


def test_no_sdk_means_one_warning_and_no_tracer(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)
    assert make_tracer({}) is None
    assert caplog.records == []
    assert make_tracer({"VANTUM_OTEL": "1"}) is None
    assert [r.levelname for r in caplog.records] == ["WARNING"]
    assert "not installed" in caplog.records[0].message


def test_missing_otlp_exporter_disables_tracing_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("opentelemetry.sdk")
    for name in (
        "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    ):
        monkeypatch.setitem(sys.modules, name, None)
    assert make_tracer({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}) is None
    (record,) = caplog.records
    assert record.levelname == "WARNING" and "VANTUM_OTEL=console" in record.message


def test_console_exporter_prints_turn_spans(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("opentelemetry.sdk")
    tracing = make_tracer({"VANTUM_OTEL": "console", "OTEL_SERVICE_NAME": "vantum-test"})
    assert tracing is not None
    observer = tracing.observer("sess-c", "browser")
    observer.on_event(e.ResponseStarted("u", 0))
    observer.on_event(e.TurnMetrics("u", **metrics()))
    tracing.shutdown()  # flushes the batch processor
    out = capsys.readouterr().out
    spans = json.loads("[" + out.replace("}\n{", "},{") + "]")
    names = sorted(s["name"] for s in spans)
    assert names == sorted(
        ["vantum.turn", "stt.final", "llm.first_token", "tts.first_audio", "egress"]
    )
    turn = next(s for s in spans if s["name"] == "vantum.turn")
    assert turn["resource"]["attributes"]["service.name"] == "vantum-test"
    assert turn["attributes"]["vantum.session_id"] == "sess-c"


def test_importing_the_module_does_not_import_opentelemetry() -> None:
    code = (
        "import sys, vantum.server.tracing, vantum.logs;"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert out.strip() == "[]"
