"""The envelope codec and client-event validation, driven by hypothesis."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantum.errors import ProtocolError
from vantum.pipeline.settings import CallSettings
from vantum.protocol import client_events, envelope
from vantum.protocol import events as ev
from vantum.protocol.ids import is_uuid, new_id

SID = new_id()

json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text()
    | st.binary(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    event_type=st.text(min_size=1, max_size=40),
    payload=st.dictionaries(st.text(max_size=10), json_like, max_size=5),
    request_type=st.none() | st.text(min_size=1, max_size=20),
)
def test_envelope_round_trips(
    event_type: str, payload: dict[str, Any], request_type: str | None
) -> None:
    env = envelope.Envelope(event_type, new_id(), SID, payload, request_type)
    decoded = envelope.decode(envelope.encode(env))
    assert decoded.event_type == env.event_type
    assert decoded.event_id == env.event_id
    assert decoded.session_id == env.session_id
    assert decoded.payload == env.payload


@given(st.binary(max_size=200))
def test_decoder_is_total_on_garbage(data: bytes) -> None:
    try:
        env = envelope.decode(data)
    except ProtocolError as exc:
        assert exc.event_type == ev.ERR_MALFORMED
        assert exc.message
    else:
        assert isinstance(env.event_type, str) and env.event_type


@given(json_like)
def test_any_msgpack_value_is_accepted_or_rejected_cleanly(value: object) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    try:
        env = envelope.decode(data)
        client_events.parse(env, SID)
    except ProtocolError as exc:
        assert exc.event_type.count(".") == 2


def test_uuid7_ids_are_time_ordered() -> None:
    ids = [new_id() for _ in range(50)]
    assert all(is_uuid(i) for i in ids)
    assert all(i[14] == "7" for i in ids)
    assert ids == sorted(ids)


def _env(event_type: str, payload: dict[str, Any], session_id: str = SID) -> envelope.Envelope:
    return envelope.Envelope(event_type, new_id(), session_id, payload)


def test_start_parses_and_defaults() -> None:
    start = client_events.parse(_env(ev.INPUT_START, {"samplingRate": 48000}), SID)
    assert isinstance(start, client_events.InputStart)
    assert (start.sampling_rate, start.language, start.turn_mode) == (48000, None, "manual")
    # An omitted language is the agent's, else en-US, once it becomes the call's settings.
    assert CallSettings().with_input_start(start).language == "en-US"


def test_voicechat_aliases_are_accepted() -> None:
    chunk = client_events.parse(_env("voicechat.audio.chunk", {"audio": b"\x00\x01"}), SID)
    assert isinstance(chunk, client_events.InputChunk)
    end = client_events.parse(_env("voicechat.audio.end", {}), SID)
    assert isinstance(end, client_events.InputEnd)


@pytest.mark.parametrize(
    ("event_type", "payload", "session_id", "error"),
    [
        ("audio.input.start", {"samplingRate": 5000}, SID, ev.ERR_INVALID_RATE),
        ("audio.input.start", {"samplingRate": 96000}, SID, ev.ERR_INVALID_RATE),
        ("audio.input.start", {"samplingRate": "16000"}, SID, ev.ERR_INVALID_RATE),
        ("audio.input.start", {"samplingRate": True}, SID, ev.ERR_INVALID_RATE),
        (
            "audio.input.start",
            {"samplingRate": 16000, "encoding": "opus"},
            SID,
            ev.ERR_INVALID_FORMAT,
        ),
        ("audio.input.start", {"samplingRate": 16000, "turnMode": "x"}, SID, ev.ERR_INVALID_FORMAT),
        ("audio.input.chunk", {"audio": "text"}, SID, ev.ERR_INVALID_FORMAT),
        ("audio.input.chunk", {"audio": b"\x00"}, SID, ev.ERR_INVALID_FORMAT),
        ("audio.input.chunk", {}, SID, ev.ERR_INVALID_FORMAT),
        ("audio.input.end", {}, new_id(), ev.ERR_SESSION_MISMATCH),
        ("no.such.event", {}, SID, ev.ERR_UNKNOWN_EVENT),
        ("conversation.text.input", {"text": "  "}, SID, ev.ERR_TEXT_INVALID),
    ],
)
def test_bad_events_name_their_error(
    event_type: str, payload: dict[str, Any], session_id: str, error: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        client_events.parse(_env(event_type, payload, session_id), SID)
    assert info.value.event_type == error
    assert info.value.request_type == event_type
    assert info.value.message


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1garbage",
        msgpack.packb([1, 2, 3]),
        msgpack.packb({"eventId": "x"}),
        msgpack.packb({"eventType": "a.b.c", "eventId": 5}),
        msgpack.packb({"eventType": "a.b.c", "eventId": "x", "payload": [1]}),
    ],
)
def test_malformed_frames(data: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        envelope.decode(data)
    assert info.value.event_type == ev.ERR_MALFORMED
