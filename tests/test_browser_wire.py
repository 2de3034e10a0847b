"""The browser transport sends every typed event byte for byte as docs/protocol.md says.

The expected frames are written out here from the protocol document's tables — key
names, key order, value types — independently of ``transports/browser_wire.py``, and
compared with what the transport hands the socket as raw MessagePack bytes.
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given
from hypothesis import strategies as st

from vantum.pipeline import events as e
from vantum.protocol import events as ev
from vantum.transports.browser import BrowserTransport

SID = "01900000-0000-7000-8000-000000000001"

texts = st.text(max_size=30)
uids = st.uuids().map(str)
ms = st.integers(0, 2**53)
floats_or_none = st.none() | st.floats(-1e6, 1e6, allow_nan=False).map(lambda x: round(x, 1))


def documented(event: e.ServerEvent) -> tuple[str, dict[str, Any], str | None]:
    """(eventType, payload, requestType) per the tables of docs/protocol.md."""
    match event:
        case e.SessionReady():
            return "connection.lifecycle.ack", {"success": True}, None
        case e.InputAcknowledged(of=of, name=name):
            return name or of, {"success": True}, None  # the name the client used
        case e.TranscriptInterim(text, confidence, at, language):
            body = {"transcript": text, "confidence": confidence, "timestamp": float(at)}
            return "transcript.interim", {**body, "language": language}, None
        case e.TranscriptFinal(text, confidence, at, language):
            body = {"transcript": text, "confidence": confidence, "timestamp": float(at)}
            return "transcript.final", {**body, "language": language}, None
        case e.ResponseStarted(uid, at):
            return "conversation.response.start", {"utteranceId": uid, "timestamp": float(at)}, None
        case e.ResponseText(uid, text):
            return "conversation.response.text", {"utteranceId": uid, "text": text}, None
        case e.OutputStarted(uid, at):
            return "audio.output.start", {"utteranceId": uid, "timestamp": float(at)}, None
        case e.OutputChunk(uid, pcm, rate):
            payload = {"audio": pcm, "utteranceId": uid, "sampleRate": rate}
            return "audio.output.chunk", payload, None
        case e.OutputComplete(uid):
            return "audio.output.complete", {"utteranceId": uid}, None
        case e.OutputCancelled(uid, reason):
            return "audio.output.cancel", {"utteranceId": uid, "reason": reason}, None
        case e.ResponseComplete(uid):
            return "conversation.response.complete", {"utteranceId": uid}, None
        case e.TurnMetrics():
            payload = {
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
            return "metrics.turn", payload, None
        case e.DtmfReceived(digit):
            return "conversation.dtmf", {"digit": digit}, None
        case e.CallEnded(reason, message):
            return f"connection.lifecycle.{reason}", {"message": message}, None
        case e.ErrorEvent(code, message, request, reason, _, _):
            payload = (
                {"message": message} if reason is None else {"message": message, "reason": reason}
            )
            return code, payload, request
    raise AssertionError(f"no documented form for {event!r}")


error_codes = st.sampled_from(
    [
        ev.ERR_MALFORMED,
        ev.ERR_UNKNOWN_EVENT,
        ev.ERR_INVALID_RATE,
        ev.ERR_RATE,
        ev.ERR_STT,
        ev.ERR_TTS,
        ev.ERR_QUEUE_FULL,
        ev.ERR_AUTH,
        ev.ERR_CAPACITY,
        "llm.error.rate_limit",
    ]
)

server_events: st.SearchStrategy[e.ServerEvent] = st.one_of(
    st.just(e.SessionReady()),
    st.builds(
        e.InputAcknowledged,
        st.sampled_from(["audio.input.start", "audio.input.end"]),
        uids,
        st.none() | st.sampled_from(["voicechat.audio.start", "voicechat.audio.end"]),
    ),
    st.builds(e.TranscriptInterim, texts, st.floats(0, 1), ms, st.sampled_from(["en-US", "es"])),
    st.builds(e.TranscriptFinal, texts, st.floats(0, 1), ms, st.sampled_from(["en-US", "es"])),
    st.builds(e.ResponseStarted, uids, ms),
    st.builds(e.ResponseText, uids, texts),
    st.builds(e.OutputStarted, uids, ms),
    st.builds(e.OutputChunk, uids, st.binary(max_size=64), st.sampled_from([8000, 16000, 48000])),
    st.builds(e.OutputComplete, uids),
    st.builds(e.OutputCancelled, uids, st.sampled_from(["barge_in", "call_ended"])),
    st.builds(e.ResponseComplete, uids),
    st.builds(
        e.TurnMetrics,
        uids,
        floats_or_none,
        floats_or_none,
        floats_or_none,
        floats_or_none,
        floats_or_none,
        st.booleans(),
        st.integers(0, 100),
        st.floats(0, 1e4, allow_nan=False).map(lambda x: round(x, 1)),
    ),
    st.builds(e.DtmfReceived, st.sampled_from(list("0123456789*#"))),
    st.builds(e.CallEnded, st.sampled_from(["hangup", "max_duration"]), texts),
    st.builds(
        e.ErrorEvent,
        error_codes,
        texts,
        st.sampled_from(["unknown", "turn", "connect", ev.INPUT_CHUNK]),
        st.none() | st.sampled_from(["missing", "expired"]),
        st.none() | uids,
        st.none() | uids,
    ),
)


async def sent_frame(event: e.ServerEvent) -> bytes:
    frames: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("not read")

    async def send(message: dict[str, Any]) -> None:
        frames.append(message)

    await BrowserTransport(SID, receive, send).send(event)
    (message,) = frames
    assert message["type"] == "websocket.send" and "text" not in message
    frame: bytes = message["bytes"]
    return frame


@given(server_events)
async def test_every_server_event_is_sent_as_documented(event: e.ServerEvent) -> None:
    frame = await sent_frame(event)
    event_type, payload, request_type = documented(event)
    event_id = msgpack.unpackb(frame)["eventId"]
    session_id = SID
    if isinstance(event, e.ErrorEvent):
        session_id = event.session_id or SID  # an error echoes the causing frame's sessionId
    if isinstance(event, e.InputAcknowledged):
        assert event_id == event.event_id  # an ACK repeats the client's eventId
    elif isinstance(event, e.ErrorEvent) and event.event_id is not None:
        assert event_id == event.event_id  # so does an error a client frame caused
    else:
        assert len(event_id) == 36 and event_id[14] == "7"  # a fresh UUIDv7
    expected: dict[str, Any] = {
        "eventType": event_type,
        "eventId": event_id,
        "sessionId": session_id,
        "payload": payload,
    }
    if request_type is not None:
        expected["requestType"] = request_type
    assert frame == msgpack.packb(expected, use_bin_type=True)
