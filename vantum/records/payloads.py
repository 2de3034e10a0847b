"""What each webhook event says, built from the call record: pure functions.

The call store calls these inside the transaction that starts or ends the call,
so the outbox row holds the exact body that will be delivered (and redelivered:
a retry sends the same bytes, only the signature's timestamp changes).

Events: ``call.started``, and exactly one of ``call.ended`` (the call ran and
ended, whatever the reason) or ``call.failed`` (it failed: the session crashed,
the server died under it, or the carrier reports it never connected). Both carry
the same ``data``. Field names are documented in docs/integration.md.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from .store import OPEN_OUTCOME_ON_RESTART, CallEvent, CallRecord, CallSummary

CALL_STARTED = "call.started"
CALL_ENDED = "call.ended"
CALL_FAILED = "call.failed"
FAILED_OUTCOMES = frozenset(
    {"error", OPEN_OUTCOME_ON_RESTART, "failed", "busy", "no-answer", "canceled"}
)
"""End reasons that make the terminal event ``call.failed`` (the last four are
Twilio's call statuses for a call that never connected)."""
TOOL_PREFIX = "conversation.tool."
RECORDING_KIND = "recording.saved"
"""The record event the recorder writes when a recording is complete."""

_STAGES = (
    ("endOfSpeechToFinalMs", "stt_final_ms"),
    ("finalToLlmFirstTokenMs", "llm_first_token_ms"),
    ("llmFirstTokenToTtsFirstAudioMs", "tts_first_audio_ms"),
    ("ttsFirstAudioToFirstAudioSentMs", "egress_ms"),
    ("voiceToVoiceMs", "voice_to_voice_ms"),
)


def envelope(event_id: str, event_type: str, created_at: float, data: Mapping[str, Any]) -> str:
    """The JSON body of one delivery (compact, UTF-8, keys in a stable order)."""
    body = {"id": event_id, "type": event_type, "created_at": created_at, "data": data}
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False, default=str)


def call_header(summary: CallSummary) -> dict[str, Any]:
    """The fields every call event starts with."""
    meta = summary.meta
    return {
        "call_id": summary.call_id,
        "agent": meta.get("agent"),
        "transport": summary.transport,
        "from": meta.get("from"),
        "to": meta.get("to"),
        "carrier_call_id": meta.get("call_sid"),
        "started_at": summary.started_at,
    }


def started_data(summary: CallSummary) -> dict[str, Any]:
    return call_header(summary)


def terminal_type(outcome: str | None) -> str:
    return CALL_FAILED if outcome in FAILED_OUTCOMES else CALL_ENDED


def ended_data(record: CallRecord) -> dict[str, Any]:
    """``call.ended`` / ``call.failed`` data: the call, what was said, how fast."""
    summary = record.summary
    data = call_header(summary)
    ended = summary.ended_at
    data.update(
        ended_at=ended,
        duration_s=None if ended is None else round(ended - summary.started_at, 3),
        end_reason=summary.outcome,
        transcript=transcript_turns(record.events),
        tool_calls=[
            {"type": e.kind, "at": e.at, **e.payload}
            for e in record.events
            if e.kind.startswith(TOOL_PREFIX)
        ],
        latency=latency_summary(record.events),
        errors=[
            {"type": e.kind, "at": e.at, "message": e.payload.get("message")}
            for e in record.events
            if "error" in e.kind
        ],
        recording=_recording(record.events),
        meta=dict(summary.meta),
    )
    return data


def transcript_turns(events: Sequence[CallEvent]) -> list[dict[str, Any]]:
    """The conversation as turns: each caller final, and each answer's text joined,
    with when it started and ended and whether a barge-in cut it."""
    turns: list[dict[str, Any]] = []
    answers: dict[str, dict[str, Any]] = {}
    for e in events:
        p = e.payload
        if e.kind == "transcript.final" and p.get("transcript"):
            turns.append(
                {"speaker": "caller", "text": str(p["transcript"]), "start": e.at, "end": e.at}
            )
        elif e.kind == "conversation.response.text" and p.get("text"):
            uid = str(p.get("utteranceId", ""))
            turn = answers.get(uid)
            if turn is None:
                turn = {"speaker": "agent", "text": "", "start": e.at, "end": e.at}
                turn["utterance_id"] = uid
                turn["interrupted"] = False
                answers[uid] = turn
                turns.append(turn)
            turn["text"] = (turn["text"] + " " + str(p["text"])).strip()
            turn["end"] = e.at
        elif e.kind in ("conversation.response.complete", "audio.output.cancel"):
            turn = answers.get(str(p.get("utteranceId", "")))
            if turn is not None:
                turn["end"] = max(turn["end"], e.at)
                if e.kind == "audio.output.cancel":
                    turn["interrupted"] = True
    return turns


def latency_summary(events: Sequence[CallEvent]) -> dict[str, Any]:
    """Per-turn latencies (``metrics.turn``) and their median / p95 / max per stage."""
    rows = [e.payload for e in events if e.kind == "metrics.turn"]
    per_turn = [
        {"utterance_id": p.get("utteranceId"), **{name: p.get(key) for key, name in _STAGES}}
        for p in rows
    ]
    stats: dict[str, Any] = {}
    for key, name in _STAGES:
        values = sorted(float(p[key]) for p in rows if isinstance(p.get(key), int | float))
        if values:
            stats[name] = {
                "p50": statistics.median(values),
                "p95": values[min(len(values) - 1, round(0.95 * (len(values) - 1)))],
                "max": values[-1],
            }
    return {"turns": len(rows), "summary": stats, "per_turn": per_turn}


def _recording(events: Sequence[CallEvent]) -> dict[str, Any] | None:
    for e in reversed(events):
        if e.kind == RECORDING_KIND:
            return dict(e.payload)
    return None
