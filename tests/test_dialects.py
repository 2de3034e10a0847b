"""Both dialects map every typed event to exactly one frame; the voicechat dialect's
frames are as docs/protocol.md (Dialects) writes them out, byte for byte."""

from __future__ import annotations

import time
from typing import Any

import msgpack
from hypothesis import given
from test_browser_wire import SID, documented, server_events

from vantum.pipeline import events as e
from vantum.transports.browser import BrowserTransport
from vantum.transports.voicechat import VoicechatTransport
from vantum.transports.voicechat_wire import error_event_type


def voicechat_documented(event: e.ServerEvent) -> tuple[str, dict[str, Any], str | None]:
    """(eventType, payload, requestType) per the Dialects table; ``timestamp`` of a
    cut answer is checked apart (it is the time of sending)."""
    match event:
        case e.SessionReady():
            return "connection.ack", {"success": True}, None
        case e.OutputStarted(uid, at):
            return "voicechat.response.start", {"utteranceId": uid, "timestamp": float(at)}, None
        case e.OutputChunk(uid, pcm, rate):
            payload = {"audio": pcm, "utteranceId": uid, "sampleRate": rate}
            return "voicechat.response.chunk", payload, None
        case e.OutputComplete(uid):
            return "voicechat.response.complete", {"utteranceId": uid}, None
        case e.OutputCancelled(uid, reason):
            name = "interrupt" if reason == "barge_in" else "stop"
            return f"voicechat.response.{name}", {"utteranceId": uid, "timestamp": 0.0}, None
        case e.ErrorEvent(code, message, request, reason, _, _):
            named = request not in ("unknown", "turn", "connect") and "." in request
            kind = request.rsplit(".", 1)[0] + ".error" if named else "voicechat.error"
            payload = {"message": message, "code": code}
            if reason is not None:
                payload["reason"] = reason
            return kind, payload, request
    return documented(event)  # the rest is named as on /ws


async def frames(transport_class: type[BrowserTransport], event: e.ServerEvent) -> list[bytes]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await transport_class(SID, receive, send).send(event)
    assert all(m["type"] == "websocket.send" and "text" not in m for m in sent)
    return [m["bytes"] for m in sent]


@given(server_events)
async def test_each_event_is_one_frame_in_each_dialect(event: e.ServerEvent) -> None:
    (_,) = await frames(BrowserTransport, event)  # /ws: one frame (test_browser_wire: which)
    (frame,) = await frames(VoicechatTransport, event)
    got = msgpack.unpackb(frame)
    event_type, payload, request_type = voicechat_documented(event)
    if isinstance(event, e.OutputCancelled):
        stamp = got["payload"]["timestamp"]
        assert isinstance(stamp, float) and abs(stamp - time.time() * 1000) < 60_000
        payload["timestamp"] = stamp
    if isinstance(event, e.InputAcknowledged) or (
        isinstance(event, e.ErrorEvent) and event.event_id is not None
    ):
        assert got["eventId"] == event.event_id
    else:
        assert len(got["eventId"]) == 36 and got["eventId"][14] == "7"
    session_id = SID
    if isinstance(event, e.ErrorEvent):
        session_id = event.session_id or SID
    expected: dict[str, Any] = {
        "eventType": event_type,
        "eventId": got["eventId"],
        "sessionId": session_id,
        "payload": payload,
    }
    if request_type is not None:
        expected["requestType"] = request_type
    assert frame == msgpack.packb(expected, use_bin_type=True)


def test_error_names_follow_the_original_to_error_event_type() -> None:
    assert error_event_type("voicechat.audio.start") == "voicechat.audio.error"
    assert error_event_type("voicechat.audio.chunk") == "voicechat.audio.error"
    assert error_event_type("audio.input.start") == "audio.input.error"
    assert error_event_type("chat.message.send") == "chat.message.error"
    for no_request in ("unknown", "turn", "connect", "nodots", ".x"):
        assert error_event_type(no_request) == "voicechat.error"
