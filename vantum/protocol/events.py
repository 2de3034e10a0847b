"""Event names of the browser protocol, in one place so docs and code agree."""

from __future__ import annotations

# Server -> client
CONNECTION_ACK = "connection.lifecycle.ack"
TRANSCRIPT_INTERIM = "transcript.interim"
TRANSCRIPT_FINAL = "transcript.final"
RESPONSE_START = "conversation.response.start"
RESPONSE_COMPLETE = "conversation.response.complete"
RESPONSE_TEXT = "conversation.response.text"
OUTPUT_START = "audio.output.start"
OUTPUT_CHUNK = "audio.output.chunk"
OUTPUT_COMPLETE = "audio.output.complete"
OUTPUT_CANCEL = "audio.output.cancel"
OUTPUT_PAUSE = "audio.output.pause"
OUTPUT_RESUME = "audio.output.resume"
METRICS_TURN = "metrics.turn"
DTMF = "conversation.dtmf"  # phone keypad digit, echoed to observers
TOOL_CALL = "conversation.tool.call"
TOOL_RESULT = "conversation.tool.result"
TOOL_TRANSFER = "conversation.tool.transfer"
LIFECYCLE_HANGUP = "connection.lifecycle.hangup"
LIFECYCLE_MAX_DURATION = "connection.lifecycle.max_duration"

# Client -> server
INPUT_START = "audio.input.start"
INPUT_CHUNK = "audio.input.chunk"
INPUT_END = "audio.input.end"
TEXT_INPUT = "conversation.text.input"

CLIENT_EVENTS = frozenset({INPUT_START, INPUT_CHUNK, INPUT_END, TEXT_INPUT})

INPUT_ALIASES = {
    "voicechat.audio.start": INPUT_START,
    "voicechat.audio.chunk": INPUT_CHUNK,
    "voicechat.audio.end": INPUT_END,
}
"""Names used by the original TypeScript clients; accepted on input only."""

# Error events: "<domain>.error.<kind>", each carries a top-level requestType.
ERR_MALFORMED = "error.system.unknown"
ERR_UNKNOWN_EVENT = "connection.error.unknown_event"
ERR_SESSION_MISMATCH = "connection.error.session_mismatch"
ERR_INVALID_FORMAT = "audio.error.invalid_format"
ERR_INVALID_RATE = "audio.error.invalid_sampling_rate"
ERR_NOT_STARTED = "audio.error.not_started"
ERR_RATE = "audio.error.rate_exceeded"
ERR_TEXT_INVALID = "conversation.error.invalid_text"
ERR_QUEUE_FULL = "conversation.error.queue_full"
ERR_TOOLS = "conversation.error.tools_unavailable"
ERR_BACKPRESSURE = "session.error.backpressure"
ERR_STT = "stt.error.provider"
ERR_TTS = "tts.error.synthesis"
ERR_S2S = "s2s.error.provider"
ERR_SHUTDOWN = "connection.error.shutdown"
ERR_AUTH = "connection.error.auth"
ERR_CAPACITY = "connection.error.capacity"
ERR_AGENT = "connection.error.agent"
"""The call's agent cannot run: ``reason`` unknown_agent, agent_mismatch, bad_claims,
missing_variable (docs/agents.md); the connection then closes with 1008."""


def is_error(event_type: str) -> bool:
    """Whether a wire ``eventType`` names an error event (for clients reading frames;
    inside the server errors are :class:`vantum.pipeline.events.ErrorEvent`)."""
    return ".error." in event_type or event_type.startswith("error.")


def llm_error(kind: str) -> str:
    """``llm.error.auth`` / ``rate_limit`` / ``network`` / ``fatal``."""
    return f"llm.error.{kind}"


# WebSocket close codes (documented in docs/protocol.md)
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001  # server shutting down
CLOSE_TOO_BIG = 1009  # frame larger than the configured maximum
CLOSE_INTERNAL = 1011  # unexpected server error in this session
CLOSE_POLICY = 1008  # authentication failed (after connection.error.auth)
CLOSE_TRY_AGAIN = 1013  # server at capacity
