"""The ``voicechat`` dialect's wire form of the session's typed events.

The dialect of the original TypeScript Vantum (its ``vantum-shared`` event names),
served at ``/voicechat/ws`` so that clients written for it, such as the original
React frontend, work unchanged (docs/protocol.md, Dialects). Like
:mod:`.browser_wire` this is a pure mapping, and the only place that knows this
dialect's outbound names; events the original has no name for keep the browser
dialect's form (its clients ignore events they do not know).

Differences from the browser dialect:

- the first frame is ``connection.ack``;
- the answer's audio is ``voicechat.response.start`` / ``.chunk`` / ``.complete``,
  and a cut answer ``voicechat.response.interrupt`` (barge-in) or
  ``voicechat.response.stop`` (any other stop), each with ``{utteranceId, timestamp}``;
  a paused answer is ``voicechat.response.stop`` with ``reason: "paused"`` (the
  original client stops its playback on it, and plays the chunks that follow a
  ``voicechat.response.resume``, a name it does not know and ignores);
- an error is named after the request that caused it, as the original's
  ``toErrorEventType`` does (the request's last name part becomes ``error``:
  ``voicechat.audio.start`` -> ``voicechat.audio.error``), and ``voicechat.error``
  where no request did; the payload is ``{message, code}`` (+ ``reason``), ``code``
  being the browser dialect's error name.
"""

from __future__ import annotations

from typing import Any

from ..pipeline import events as e
from . import browser_wire
from .browser_wire import WireEvent

CONNECTION_ACK = "connection.ack"
RESPONSE_START = "voicechat.response.start"
RESPONSE_CHUNK = "voicechat.response.chunk"
RESPONSE_COMPLETE = "voicechat.response.complete"
RESPONSE_INTERRUPT = "voicechat.response.interrupt"
RESPONSE_STOP = "voicechat.response.stop"
RESPONSE_RESUME = "voicechat.response.resume"
ERROR = "voicechat.error"

NOT_A_REQUEST = frozenset({"unknown", "turn", "connect"})
"""``ErrorEvent.request`` values that name no client frame."""


def error_event_type(request: str) -> str:
    """The error's ``eventType`` for an error caused by ``request`` (the original's
    ``toErrorEventType``), or ``voicechat.error`` where no request caused it."""
    head, dot, _ = request.rpartition(".")
    if request in NOT_A_REQUEST or not dot or not head:
        return ERROR
    return f"{head}.error"


def to_wire(event: e.ServerEvent, now_ms: float) -> WireEvent:
    """This dialect's ``eventType`` and payload of ``event``; ``now_ms`` (Unix epoch
    milliseconds) stamps the events that carry no instant of their own."""
    if isinstance(event, e.OutputChunk):
        payload: dict[str, Any] = {
            "audio": event.pcm,
            "utteranceId": event.utterance_id,
            "sampleRate": event.rate,
        }
        return WireEvent(RESPONSE_CHUNK, payload)
    if isinstance(event, e.OutputStarted):
        payload = {"utteranceId": event.utterance_id, "timestamp": float(event.at_ms)}
        return WireEvent(RESPONSE_START, payload)
    if isinstance(event, e.OutputComplete):
        return WireEvent(RESPONSE_COMPLETE, {"utteranceId": event.utterance_id})
    if isinstance(event, e.OutputCancelled):
        name = RESPONSE_INTERRUPT if event.reason == "barge_in" else RESPONSE_STOP
        return WireEvent(name, {"utteranceId": event.utterance_id, "timestamp": float(now_ms)})
    if isinstance(event, e.OutputPaused):
        payload = {
            "utteranceId": event.utterance_id,
            "timestamp": float(now_ms),
            "reason": "paused",
            "playedMs": float(event.played_ms),
        }
        return WireEvent(RESPONSE_STOP, payload)
    if isinstance(event, e.OutputResumed):
        payload = {
            "utteranceId": event.utterance_id,
            "timestamp": float(now_ms),
            "playedMs": float(event.played_ms),
        }
        return WireEvent(RESPONSE_RESUME, payload)
    if isinstance(event, e.SessionReady):
        return WireEvent(CONNECTION_ACK, {"success": True})
    if isinstance(event, e.ErrorEvent):
        payload = {"message": event.message, "code": event.code}
        if event.reason is not None:
            payload["reason"] = event.reason
        return WireEvent(
            error_event_type(event.request),
            payload,
            event.event_id,
            event.request,
            session_id=event.session_id,
        )
    # ACKs, transcripts, conversation.*, metrics.turn, lifecycle: as in /ws.
    return browser_wire.to_wire(event)


__all__ = ["error_event_type", "to_wire"]
