"""Prometheus metrics, one registry per app so tests and many servers don't collide.

prometheus_client is used rather than hand-written exposition text: it gets the
text format, histogram buckets and escaping right.
"""

from __future__ import annotations

import gc

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from ..pipeline.events import ErrorEvent, ResponseStarted, ServerEvent, ToolFinished, TurnMetrics

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.sessions_active = Gauge("vantum_sessions_active", "Open call sessions", registry=r)
        self.gc_frozen = Gauge(
            "vantum_gc_frozen_objects",
            "Objects frozen out of the cyclic collector at start-up (gc.freeze)",
            registry=r,
        )
        self.gc_frozen.set_function(gc.get_freeze_count)
        self.sessions_total = Counter(
            "vantum_sessions", "Call sessions accepted", ["transport"], registry=r
        )
        self.sessions_refused = Counter(
            "vantum_sessions_refused", "Connections refused", ["reason"], registry=r
        )
        self.sessions_cut = Counter(
            "vantum_sessions_cut",
            "Sessions whose connection the server cut: slow_reader, oversize, bad_frame, "
            "max_duration or shutdown (a deadline the peer did not let the call meet)",
            ["reason"],
            registry=r,
        )
        self.agent_calls = Counter(
            "vantum_agent_calls", "Calls started, by the agent they run", ["agent"], registry=r
        )
        self.agent_resolver_failures = Counter(
            "vantum_agent_resolver_failures",
            "Agent resolver requests that gave no usable answer (the call ran the "
            "requested or default agent): timeout, error, status, bad_response, unknown_agent",
            ["reason"],
            registry=r,
        )
        self.turns_total = Counter("vantum_turns", "Answers started", registry=r)
        self.tool_latency = Histogram(
            "vantum_tool_latency_seconds",
            "Tool call duration (model asked to result), by tool",
            ["tool"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.tool_failures = Counter(
            "vantum_tool_failures",
            "Tool calls that failed (error, timeout, refusal), by tool",
            ["tool"],
            registry=r,
        )
        self.errors_total = Counter(
            "vantum_error_events", "Error events sent to clients", ["event_type"], registry=r
        )
        self.voice_to_voice = Histogram(
            "vantum_voice_to_voice_seconds",
            "End of caller speech to first answer audio sent",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.stage_latency = Histogram(
            "vantum_stage_latency_seconds",
            "Per-stage turn latency",
            ["stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )

        self.audio_dropped_seconds = Counter(
            "vantum_audio_dropped_seconds",
            "Audio discarded: in = caller audio refused (rate limit), "
            "out = answer audio sent but cut by a barge-in before it played",
            ["direction", "reason"],
            registry=r,
        )
        self.audio_late_seconds = Counter(
            "vantum_audio_late_seconds",
            "Audio delayed: in = caller audio held up by a slow audio path, "
            "out = silence the caller heard mid-answer because audio came late",
            ["direction"],
            registry=r,
        )
        self.audio_underruns = Counter(
            "vantum_audio_underruns",
            "Gaps in answers' playback (the caller's buffer ran dry)",
            registry=r,
        )

        self.provider_errors = Counter(
            "vantum_provider_errors",
            "Provider failures, including those a retry or reconnect hid from the caller",
            ["provider", "kind"],
            registry=r,
        )

        self.webhook_deliveries = Counter(
            "vantum_webhook_deliveries",
            "Webhook deliveries settled: delivered, or failed (a 4xx, or retries exhausted)",
            ["event", "result"],
            registry=r,
        )
        self.webhook_attempt_failures = Counter(
            "vantum_webhook_attempt_failures",
            "Webhook attempts that did not deliver: timeout, connection, http_4xx, http_5xx",
            ["reason"],
            registry=r,
        )
        self.webhook_outbox_depth = Gauge(
            "vantum_webhook_outbox_depth",
            "Webhook deliveries pending in the outbox (all servers sharing the store)",
            registry=r,
        )
        self.webhook_delivery_latency = Histogram(
            "vantum_webhook_delivery_seconds",
            "From the event's creation to its successful delivery",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0),
            registry=r,
        )
        self.worker_restarts = Counter(
            "vantum_worker_restarts",
            "Times the supervisor of `vantum serve --workers N` restarted this worker's "
            "slot after it exited unasked (a crash); each restart ended that worker's calls",
            ["worker"],
            registry=r,
        )

        self.redis_up = Gauge(
            "vantum_redis_up",
            "1 while this worker reaches VANTUM_REDIS_URL (absent without Redis)",
            registry=r,
        )
        self.redis_errors = Counter(
            "vantum_redis_errors", "Redis operations that failed or timed out", registry=r
        )
        self.cluster_calls_expired = Counter(
            "vantum_cluster_calls_expired",
            "Calls this worker found expired in the cluster registry: their worker "
            "stopped refreshing them (it died); summed over workers, every such call once",
            registry=r,
        )

    def provider_error(self, provider: str, kind: str) -> None:
        """:class:`~vantum.providers.reporting.ProviderErrorSink` hook."""
        self.provider_errors.labels(provider, kind).inc()

    def audio_dropped(self, direction: str, reason: str, seconds: float) -> None:
        """:class:`~vantum.pipeline.meter.AudioMeter` hook."""
        self.audio_dropped_seconds.labels(direction, reason).inc(seconds)

    def audio_late(self, direction: str, seconds: float) -> None:
        """:class:`~vantum.pipeline.meter.AudioMeter` hook."""
        self.audio_late_seconds.labels(direction).inc(seconds)
        if direction == "out":
            self.audio_underruns.inc()

    def on_event(self, event: ServerEvent) -> None:
        """Session observer hook: count errors and turns, record latencies."""
        if isinstance(event, ToolFinished):
            self.tool_latency.labels(event.name).observe(event.duration_ms / 1000.0)
            if not event.ok:
                self.tool_failures.labels(event.name).inc()
        elif isinstance(event, ErrorEvent):
            self.errors_total.labels(event.code).inc()
        elif isinstance(event, ResponseStarted):
            self.turns_total.inc()
        elif isinstance(event, TurnMetrics):
            if event.voice_to_voice_ms is not None:
                self.voice_to_voice.observe(event.voice_to_voice_ms / 1000.0)
            stages = (
                ("stt_final", event.end_of_speech_to_final_ms),
                ("llm_first_token", event.final_to_llm_first_token_ms),
                ("tts_first_audio", event.llm_first_token_to_tts_first_audio_ms),
                ("egress", event.tts_first_audio_to_first_audio_sent_ms),
            )
            for stage, value in stages:
                if value is not None:
                    self.stage_latency.labels(stage).observe(value / 1000.0)

    def render(self) -> bytes:
        return generate_latest(self.registry)
