"""Optional OpenTelemetry traces: one span per answered turn, one child per stage.

The session already measures each stage of a turn and reports it in ``metrics.turn``
(docs/protocol.md). :class:`TurnTracer` is an ``EventObserver`` that turns those
numbers into spans after the fact, with explicit start/end times, so nothing in the
pipeline needs to know about tracing and a trace costs nothing while audio flows::

    vantum.turn           end of caller speech -> first answer audio sent
    ├─ stt.final          end of speech -> final transcript
    ├─ llm.first_token    final transcript -> first LLM token
    ├─ tts.first_audio    first token -> first TTS audio
    └─ egress             first TTS audio -> first chunk handed to the socket

The turn span ends when the answer's first ``audio.output.chunk`` passed the observer
(the instant ``voiceToVoiceMs`` ends), not when ``metrics.turn`` arrives: that event
comes after the whole answer was played. Error events seen while an answer is under
way become span events of its turn span; errors between answers become their own
zero-length ``vantum.error`` spans.

OpenTelemetry is optional (``pip install 'vantum[otel]'``) and imported lazily, so
this module imports and Vantum runs without it. Tracing is on when the SDK is
importable and ``VANTUM_OTEL=1`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set;
``VANTUM_OTEL=console`` prints spans to stdout instead of exporting them.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

import attrs

from ..pipeline.events import (
    ErrorEvent,
    OutputCancelled,
    OutputChunk,
    OutputComplete,
    ResponseStarted,
    ServerEvent,
    TurnMetrics,
)
from ..pipeline.session import EventObserver

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger("vantum.tracing")

STAGES = ("stt.final", "llm.first_token", "tts.first_audio", "egress")
"""The child spans of a turn, in pipeline order (the stages of ``metrics.turn``)."""


def _stages(m: TurnMetrics) -> list[tuple[str, float | None]]:
    values = (
        m.end_of_speech_to_final_ms,
        m.final_to_llm_first_token_ms,
        m.llm_first_token_to_tts_first_audio_ms,
        m.tts_first_audio_to_first_audio_sent_ms,
    )
    return list(zip(STAGES, values, strict=True))


MAX_TURN_ERRORS = 32
"""Error events kept per turn span; more are only counted."""

_DEGRADING = ("stt.", "llm.", "tts.")
"""Error domains that mean the answer itself suffered (the turn span's status is ERROR)."""

_OTLP_EXPORTERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


def _ns(ms: float) -> int:
    return round(ms * 1_000_000)


@attrs.frozen
class _ErrorSeen:
    kind: str
    message: str
    request_type: str | None
    at_ns: int


class TurnTracer:
    """``EventObserver`` for one session: forwards every event to ``also``, then traces.

    It runs inside egress for every frame, so it only does arithmetic per event and
    calls the tracer once per turn; ``span.end()`` only queues the span (the SDK's
    batch processor exports it from its own thread). A tracing failure is logged once
    and never reaches the call.
    """

    def __init__(
        self,
        tracer: Tracer,
        session_id: str,
        transport: str,
        also: EventObserver | None = None,
        *,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.tracer = tracer
        self.session_id = session_id
        self.transport = transport
        self.also = also
        self.turns = 0
        """Turn spans emitted so far; the next turn's ``vantum.turn.index`` is this + 1."""
        self._clock = clock
        self._in_answer = False
        self._first_audio_ns: int | None = None
        self._interrupted: bool | None = None
        self._errors: list[_ErrorSeen] = []
        self._errors_dropped = 0
        self._broken = False

    def on_event(self, event: ServerEvent) -> None:
        if self.also is not None:
            self.also.on_event(event)
        try:
            self._observe(event)
        except Exception:
            if not self._broken:
                self._broken = True
                log.exception("tracing failed; this session's remaining turns may lack spans")

    def _observe(self, event: ServerEvent) -> None:
        if isinstance(event, OutputChunk):
            if self._in_answer and self._first_audio_ns is None:
                self._first_audio_ns = self._clock()
        elif isinstance(event, ResponseStarted):
            self._in_answer = True
            self._first_audio_ns = None
            self._interrupted = None
        elif isinstance(event, OutputCancelled):
            self._interrupted = True
        elif isinstance(event, OutputComplete):
            self._interrupted = False
        elif isinstance(event, TurnMetrics):
            self._end_turn(event)
        elif isinstance(event, ErrorEvent):
            seen = _ErrorSeen(event.code, event.message, event.request, self._clock())
            if not self._in_answer:
                self._error_span(seen)
            elif len(self._errors) < MAX_TURN_ERRORS:
                self._errors.append(seen)
            else:
                self._errors_dropped += 1

    def _attributes(self) -> dict[str, str | int | bool | float]:
        return {"vantum.session_id": self.session_id, "vantum.transport": self.transport}

    def _end_turn(self, metrics: TurnMetrics) -> None:
        from opentelemetry.trace import Status, StatusCode, set_span_in_context

        errors, dropped = self._errors, self._errors_dropped
        end = self._first_audio_ns if self._first_audio_ns is not None else self._clock()
        interrupted = self._interrupted
        self._in_answer, self._first_audio_ns, self._interrupted = False, None, None
        self._errors, self._errors_dropped = [], 0
        self.turns += 1

        stages = _stages(metrics)
        v2v = metrics.voice_to_voice_ms
        total = v2v if v2v is not None else sum(ms for _, ms in stages if ms is not None)
        start = end - _ns(total)

        attrs_ = self._attributes()
        attrs_["vantum.turn.index"] = self.turns
        attrs_["vantum.turn.speculative"] = metrics.speculative
        if interrupted is not None:
            attrs_["vantum.turn.interrupted"] = interrupted
        attrs_["vantum.utterance_id"] = metrics.utterance_id
        if v2v is not None:
            attrs_["vantum.turn.voice_to_voice_ms"] = v2v
        for name, ms in stages:
            if ms is not None:
                attrs_[f"vantum.turn.{name.replace('.', '_')}_ms"] = ms
        if errors or dropped:
            attrs_["vantum.turn.errors"] = len(errors) + dropped

        turn = self.tracer.start_span("vantum.turn", attributes=attrs_, start_time=start)
        for seen in errors:
            turn.add_event(seen.kind, _error_attributes(seen), timestamp=seen.at_ns)
        degraded = [e.kind for e in errors if e.kind.startswith(_DEGRADING)]
        if degraded:
            turn.set_status(Status(StatusCode.ERROR, ", ".join(dict.fromkeys(degraded))))
        parent = set_span_in_context(turn)
        cursor = start
        for name, ms in stages:
            if ms is None:
                continue  # the stage did not happen (e.g. no audio after a TTS failure)
            # Stages are laid end to end. A speculative LLM can answer before the final
            # transcript, making its stage negative: the span then covers the overlap.
            nxt = cursor + _ns(ms)
            child = self.tracer.start_span(
                name,
                context=parent,
                attributes={**self._attributes(), "vantum.stage_ms": ms},
                start_time=min(cursor, nxt),
            )
            child.end(end_time=max(cursor, nxt))
            cursor = nxt
        turn.end(end_time=end)

    def _error_span(self, seen: _ErrorSeen) -> None:
        from opentelemetry.trace import Status, StatusCode

        span: Span = self.tracer.start_span(
            "vantum.error",
            attributes={**self._attributes(), **_error_attributes(seen)},
            start_time=seen.at_ns,
        )
        span.set_status(Status(StatusCode.ERROR, seen.kind))
        span.end(end_time=seen.at_ns)


def _error_attributes(seen: _ErrorSeen) -> dict[str, str]:
    out = {"vantum.error.type": seen.kind, "vantum.error.message": seen.message[:500]}
    if seen.request_type is not None:
        out["vantum.error.request_type"] = seen.request_type
    return out


# --- setup ---------------------------------------------------------------------------


@attrs.frozen
class Tracing:
    """A tracer and how to flush it; one per server process."""

    tracer: Tracer
    shutdown: Callable[[], None]
    """Flushes queued spans and stops the exporter; blocks (run it in a thread)."""

    def observer(
        self, session_id: str, transport: str, also: EventObserver | None = None
    ) -> TurnTracer:
        return TurnTracer(self.tracer, session_id, transport, also)


def sdk_available() -> bool:
    try:
        return importlib.util.find_spec("opentelemetry.sdk.trace") is not None
    except (ImportError, ValueError):
        return False


def _mode(env: Mapping[str, str]) -> str | None:
    flag = env.get("VANTUM_OTEL", "").strip().lower()
    if flag in ("0", "false", "off", "no"):
        return None
    if flag == "console":
        return "console"
    if flag in ("1", "true", "on", "yes"):
        return "otlp"
    if env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return "otlp"
    return None


def tracing_enabled(env: Mapping[str, str] | None = None) -> bool:
    """Asked for (``VANTUM_OTEL``, an OTLP endpoint) and possible (SDK installed)."""
    return _mode(os.environ if env is None else env) is not None and sdk_available()


def _exporter(mode: str) -> SpanExporter | None:
    if mode == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # Its default stream is sys.stdout as it was at import time; use today's.
        return ConsoleSpanExporter(out=sys.stdout)
    for name in _OTLP_EXPORTERS:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return cast("SpanExporter", module.OTLPSpanExporter())
    return None


def make_tracer(env: Mapping[str, str] | None = None) -> Tracing | None:
    """A tracer exporting per ``env`` (default ``os.environ``), or None when tracing is
    off or cannot work (then one warning says why). The global tracer provider is not
    touched, so an embedding application's own OpenTelemetry setup is left alone."""
    e = os.environ if env is None else env
    mode = _mode(e)
    if mode is None:
        return None
    if not sdk_available():
        log.warning("tracing requested but opentelemetry-sdk is not installed: tracing off")
        return None
    exporter = _exporter(mode)
    if exporter is None:
        log.warning(
            "tracing requested but no OTLP exporter is installed "
            "(pip install opentelemetry-exporter-otlp-proto-http, or VANTUM_OTEL=console): "
            "tracing off"
        )
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # Explicit attributes beat OTEL_SERVICE_NAME in Resource.create, so only default it.
    service = e.get("OTEL_SERVICE_NAME") or "vantum"
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    log.info("tracing on: %s exporter, service %s", mode, service)
    return Tracing(provider.get_tracer("vantum"), provider.shutdown)


__all__ = ["STAGES", "Tracing", "TurnTracer", "make_tracer", "sdk_available", "tracing_enabled"]
