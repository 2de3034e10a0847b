"""The browser dialect's wire form of the session's typed events (docs/protocol.md).

One function, :func:`to_wire`, is the only place that knows event names and
camelCase payload keys for outbound browser events; the browser transport encodes
its result into a MessagePack envelope, and the call records store the same
``(eventType, payload)`` pairs (so a stored call reads like the protocol document).
Key order is part of the byte-for-byte wire format and is kept as documented.
Millisecond instants go out as MessagePack float64, never as (u)int64: JavaScript
decoders turn a uint64 into a BigInt (msgpackr does), which breaks arithmetic and
JSON logging in the page.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from ..pipeline import events as e
from ..protocol import events as ev


@attrs.frozen
class WireEvent:
    """An event in the browser protocol's terms, before MessagePack."""

    event_type: str
    payload: dict[str, Any]
    event_id: str | None = None
    """Set for ACKs and for errors a client frame caused (that frame's id);
    otherwise the transport makes a fresh one."""
    request_type: str | None = None
    """Error frames only."""
    session_id: str | None = None
    """Errors a client frame caused: the ``sessionId`` it carried (echoed); None: the
    connection's."""


def to_wire(event: e.ServerEvent) -> WireEvent:
    """The documented ``eventType`` and payload of ``event``."""
    # Audio chunks first: 25 a second per call.
    if isinstance(event, e.OutputChunk):
        payload: dict[str, Any] = {
            "audio": event.pcm,
            "utteranceId": event.utterance_id,
            "sampleRate": event.rate,
        }
        return WireEvent(ev.OUTPUT_CHUNK, payload)
    if isinstance(event, e.TranscriptInterim | e.TranscriptFinal):
        name = (
            ev.TRANSCRIPT_FINAL if isinstance(event, e.TranscriptFinal) else ev.TRANSCRIPT_INTERIM
        )
        payload = {
            "transcript": event.text,
            "confidence": event.confidence,
            "timestamp": float(event.at_ms),
            "language": event.language,
        }
        return WireEvent(name, payload)
    if isinstance(event, e.ResponseText):
        return WireEvent(ev.RESPONSE_TEXT, {"utteranceId": event.utterance_id, "text": event.text})
    if isinstance(event, e.ResponseStarted):
        payload = {"utteranceId": event.utterance_id, "timestamp": float(event.at_ms)}
        return WireEvent(ev.RESPONSE_START, payload)
    if isinstance(event, e.OutputStarted):
        payload = {"utteranceId": event.utterance_id, "timestamp": float(event.at_ms)}
        return WireEvent(ev.OUTPUT_START, payload)
    if isinstance(event, e.OutputComplete):
        return WireEvent(ev.OUTPUT_COMPLETE, {"utteranceId": event.utterance_id})
    if isinstance(event, e.OutputCancelled):
        payload = {"utteranceId": event.utterance_id, "reason": event.reason}
        return WireEvent(ev.OUTPUT_CANCEL, payload)
    if isinstance(event, e.OutputPaused | e.OutputResumed):
        name = ev.OUTPUT_PAUSE if isinstance(event, e.OutputPaused) else ev.OUTPUT_RESUME
        payload = {"utteranceId": event.utterance_id, "playedMs": float(event.played_ms)}
        return WireEvent(name, payload)
    if isinstance(event, e.ResponseComplete):
        return WireEvent(ev.RESPONSE_COMPLETE, {"utteranceId": event.utterance_id})
    if isinstance(event, e.TurnMetrics):
        return WireEvent(ev.METRICS_TURN, metrics_payload(event))
    if isinstance(event, e.ErrorEvent):
        payload = {"message": event.message}
        if event.reason is not None:
            payload["reason"] = event.reason
        return WireEvent(
            event.code, payload, event.event_id, event.request, session_id=event.session_id
        )
    if isinstance(event, e.InputAcknowledged):
        return WireEvent(event.name or event.of, {"success": True}, event_id=event.event_id)
    if isinstance(event, e.SessionReady):
        return WireEvent(ev.CONNECTION_ACK, {"success": True})
    if isinstance(event, e.DtmfReceived):
        return WireEvent(ev.DTMF, {"digit": event.digit})
    if isinstance(event, e.ToolCalled):
        payload = {
            "callId": event.call_id,
            "name": event.name,
            "arguments": tool_arguments(event.arguments),
        }
        return WireEvent(ev.TOOL_CALL, payload)
    if isinstance(event, e.ToolFinished):
        payload = {
            "callId": event.call_id,
            "name": event.name,
            "ok": event.ok,
            "durationMs": event.duration_ms,
        }
        return WireEvent(ev.TOOL_RESULT, payload)
    if isinstance(event, e.TransferRequested):
        return WireEvent(ev.TOOL_TRANSFER, {"target": event.target})
    if isinstance(event, e.CallEnded):
        name = ev.LIFECYCLE_HANGUP if event.reason == "hangup" else ev.LIFECYCLE_MAX_DURATION
        return WireEvent(name, {"message": event.message})
    raise TypeError(f"no browser wire form for {event!r}")


def tool_arguments(text: str) -> Any:
    """The model's arguments as an object when they are JSON, else the text as written."""
    try:
        return json.loads(text) if text.strip() else {}
    except ValueError:
        return text


def metrics_payload(event: e.TurnMetrics) -> dict[str, Any]:
    """``metrics.turn``'s payload (also what the call records keep)."""
    return {
        "utteranceId": event.utterance_id,
        "endOfSpeechToFinalMs": event.end_of_speech_to_final_ms,
        "finalToLlmFirstTokenMs": event.final_to_llm_first_token_ms,
        "llmFirstTokenToTtsFirstAudioMs": event.llm_first_token_to_tts_first_audio_ms,
        "ttsFirstAudioToFirstAudioSentMs": event.tts_first_audio_to_first_audio_sent_ms,
        "voiceToVoiceMs": event.voice_to_voice_ms,
        "speculative": event.speculative,
        "underruns": event.underruns,
        "lateAudioMs": event.late_audio_ms,
    }


__all__ = ["WireEvent", "metrics_payload", "to_wire", "tool_arguments"]
