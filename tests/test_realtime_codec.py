"""The Realtime codec: every event it writes is valid by the official SDK's models
(``openai.types.realtime``), and every event survives a round trip."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent
from pydantic import TypeAdapter

from vantum.providers.base import ToolSchema
from vantum.providers.realtime import codec as rc

SERVER = TypeAdapter(RealtimeServerEvent)
CLIENT = TypeAdapter(RealtimeClientEvent)

ids = st.text("abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1, max_size=12)
text = st.text(max_size=30)
idx = st.integers(0, 5)
ms = st.integers(0, 10**7)
pcm = st.binary(max_size=64).map(lambda b: b[: len(b) // 2 * 2])

tools = st.lists(
    st.builds(
        ToolSchema,
        ids,
        text,
        st.just({"type": "object", "properties": {"city": {"type": "string"}}}),
    ),
    max_size=2,
).map(tuple)
sessions = st.builds(
    rc.SessionConfig,
    model=ids,
    instructions=text,
    voice=st.sampled_from(["marin", "cedar", "alloy"]),
    turn_detection=st.none()
    | st.builds(
        rc.ServerVad,
        st.floats(0, 1),
        st.integers(0, 1000),
        st.integers(0, 3000),
        st.booleans(),
        st.booleans(),
    ),
    transcription_model=st.none() | st.just("gpt-4o-mini-transcribe"),
    tools=tools,
)
items = st.one_of(
    st.builds(rc.TextItem, st.sampled_from(["user", "assistant", "system"]), text),
    st.builds(rc.FunctionCallItem, ids, ids, text),
    st.builds(rc.FunctionOutputItem, ids, text),
)
client_events = st.one_of(
    st.builds(rc.SessionUpdate, sessions),
    st.builds(rc.AudioAppend, pcm),
    st.just(rc.AudioCommit()),
    st.just(rc.AudioClear()),
    st.builds(rc.ItemCreate, items, st.none() | ids),
    st.builds(rc.ItemTruncate, ids, ms, st.just(0)),
    st.builds(rc.ItemDelete, ids),
    st.just(rc.ResponseCreate()),
    st.builds(rc.ResponseCancel, st.none() | ids),
)

done_items = st.one_of(
    st.builds(
        rc.DoneItem,
        ids,
        st.just("message"),
        st.sampled_from(["completed", "incomplete"]),
        text,
        st.none(),
        st.none(),
        st.none(),
    ),
    st.builds(
        rc.DoneItem,
        ids,
        st.just("function_call"),
        st.just("completed"),
        st.just(""),
        ids,
        ids,
        text,
    ),
)


@st.composite
def response_done(draw: st.DrawFn) -> rc.ResponseDone:
    status: rc.ResponseStatus = draw(
        st.sampled_from(["completed", "cancelled", "failed", "incomplete"])
    )
    reason = None
    if status == "cancelled":
        reason = draw(st.sampled_from(["turn_detected", "client_cancelled"]))
    elif status == "incomplete":
        reason = "max_output_tokens"
    code, message = (draw(ids), draw(text)) if status == "failed" else (None, None)
    output = tuple(draw(st.lists(done_items, max_size=3)))
    return rc.ResponseDone(draw(ids), status, reason, output, code, message)


server_events = st.one_of(
    st.builds(rc.SessionCreated, ids, ids, st.integers(0, 2**31)),
    st.builds(rc.SessionUpdated, sessions),
    st.builds(rc.SpeechStarted, ids, ms),
    st.builds(rc.SpeechStopped, ids, ms),
    st.builds(rc.InputCommitted, ids, st.none() | ids),
    st.just(rc.InputCleared()),
    st.builds(
        rc.ItemAdded,
        ids,
        st.just("message"),
        st.sampled_from(["user", "assistant"]),
        st.none() | ids,
        st.booleans(),
    ),
    st.builds(rc.UserTranscriptDelta, ids, text),
    st.builds(rc.UserTranscriptCompleted, ids, text),
    st.builds(rc.ResponseCreated, ids),
    st.builds(
        rc.OutputItemAdded,
        ids,
        idx,
        ids,
        st.just("message"),
        done=st.just(False),
    ),
    st.builds(
        rc.OutputItemAdded,
        ids,
        idx,
        ids,
        st.just("function_call"),
        ids,
        ids,
        done=st.just(True),
        status=st.just("completed"),
    ),
    st.builds(rc.ContentPart, ids, ids, idx, idx, text, st.booleans()),
    st.builds(rc.AudioDelta, ids, ids, idx, idx, pcm),
    st.builds(rc.AudioDone, ids, ids, idx, idx),
    st.builds(rc.TranscriptDelta, ids, ids, idx, idx, text),
    st.builds(rc.TranscriptDone, ids, ids, idx, idx, text),
    st.builds(rc.ArgumentsDelta, ids, ids, idx, ids, text),
    st.builds(rc.ArgumentsDone, ids, ids, idx, ids, ids, text),
    response_done(),
    st.builds(rc.ItemTruncated, ids, st.just(0), ms),
    st.builds(rc.ItemDeleted, ids),
    st.builds(
        rc.ErrorReport,
        st.just("invalid_request_error"),
        text,
        st.none() | ids,
        st.none() | ids,
        st.none() | ids,
    ),
)


@given(client_events, st.none() | ids)
def test_client_events_are_valid_sdk_events_and_round_trip(
    event: rc.ClientEvent, eid: str | None
) -> None:
    wire = rc.encode_client(event, eid)
    CLIENT.validate_json(wire)  # the official SDK's shape for this event
    assert rc.decode_client(wire) == (event, eid)


@given(server_events, ids)
def test_server_events_are_valid_sdk_events_and_round_trip(event: rc.ServerEvent, eid: str) -> None:
    wire = rc.encode_server(event, eid)
    SERVER.validate_json(wire)
    assert rc.decode_server(wire) == event


@pytest.mark.parametrize(
    ("message", "code", "param"),
    [
        ("not json", "invalid_json", None),
        ("[1]", "invalid_json", None),
        ('{"type": "response.explode"}', "invalid_value", "type"),
        ('{"type": "session.update", "session": {}}', "missing_required_parameter", "session.type"),
        ('{"type": "input_audio_buffer.append", "audio": "%%%"}', "invalid_value", "audio"),
        ('{"type": "conversation.item.delete"}', "missing_required_parameter", "item_id"),
        (
            '{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,'
            ' "audio_end_ms": -1}',
            "integer_below_min_value",
            "audio_end_ms",
        ),
        (
            '{"type": "conversation.item.truncate", "item_id": "i", "content_index": 0,'
            ' "audio_end_ms": "5"}',
            "invalid_type",
            "audio_end_ms",
        ),
    ],
)
def test_invalid_client_events_are_refused_like_the_server(
    message: str, code: str, param: str | None
) -> None:
    with pytest.raises(rc.InvalidEvent) as err:
        rc.decode_client(message)
    assert (err.value.code, err.value.param) == (code, param)


def test_session_update_carries_vad_tools_and_pcm24k() -> None:
    session = rc.SessionConfig(
        instructions="be brief",
        turn_detection=rc.ServerVad(silence_duration_ms=700),
        tools=(ToolSchema("weather", "the weather", {"type": "object"}),),
    )
    msg: dict[str, Any] = json.loads(rc.encode_client(rc.SessionUpdate(session)))
    audio_in = msg["session"]["audio"]["input"]
    assert audio_in["format"] == {"type": "audio/pcm", "rate": 24000}
    assert audio_in["turn_detection"]["silence_duration_ms"] == 700
    assert audio_in["turn_detection"]["interrupt_response"] is True
    assert msg["session"]["tools"][0]["name"] == "weather"


def test_unknown_server_events_are_kept_as_unknown() -> None:
    assert rc.decode_server('{"type": "rate_limits.updated", "event_id": "e"}') == rc.Unknown(
        "rate_limits.updated"
    )
    with pytest.raises(rc.InvalidEvent):
        rc.decode_server('{"type": "response.output_audio.delta", "event_id": "e"}')
