"""Twilio media-stream codec, stream state, framing, serializer and TwiML."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from vantum.errors import VantumError
from vantum.protocol import mulaw
from vantum.protocol.twilio import (
    AudioIn,
    DtmfIn,
    Mark,
    MediaFormat,
    MediaStreamSerializer,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    Phase,
    Start,
    Stop,
    TwilioConnected,
    TwilioDtmf,
    TwilioMark,
    TwilioMedia,
    TwilioProtocolError,
    TwilioSerializer,
    TwilioStart,
    TwilioStop,
    TwilioStreamState,
    clear_message,
    connect_stream_twiml,
    encode_inbound,
    frame_audio,
    mark_message,
    media_message,
    pad_frame,
    parse_inbound,
    parse_outbound,
)

SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA5e8c3c1a0b3b49f0c1a2b3c4d5e6f7a8"
ACCOUNT = "AC25e16e9a716a4a1786a7c83f58e30482"

# Frames as Twilio documents them (numbers as strings, as on the wire).
CONNECTED = '{"event": "connected", "protocol": "Call", "version": "1.0.0"}'
START = json.dumps(
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": ACCOUNT,
            "streamSid": SID,
            "callSid": CALL,
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"caller": "+15550001111", "lang": "en-US"},
        },
        "streamSid": SID,
    }
)


def media(seq: int, payload: bytes, sid: str = SID) -> str:
    body = {"track": "inbound", "chunk": str(seq - 1), "timestamp": str(20 * (seq - 2))}
    body["payload"] = base64.b64encode(payload).decode()
    return json.dumps(
        {"event": "media", "sequenceNumber": str(seq), "media": body, "streamSid": sid}
    )


def mark(seq: int, name: str, sid: str = SID) -> str:
    return json.dumps(
        {"event": "mark", "sequenceNumber": str(seq), "streamSid": sid, "mark": {"name": name}}
    )


def stop(seq: int) -> str:
    return json.dumps(
        {
            "event": "stop",
            "sequenceNumber": str(seq),
            "streamSid": SID,
            "stop": {"accountSid": ACCOUNT, "callSid": CALL},
        }
    )


DTMF = json.dumps(
    {
        "event": "dtmf",
        "streamSid": SID,
        "sequenceNumber": "5",
        "dtmf": {"track": "inbound_track", "digit": "1"},
    }
)


# --- parsing ---------------------------------------------------------------------


def test_parses_the_documented_messages() -> None:
    assert parse_inbound(CONNECTED) == TwilioConnected("Call", "1.0.0")
    start = parse_inbound(START.encode())
    assert start == TwilioStart(
        1,
        SID,
        ACCOUNT,
        CALL,
        ("inbound",),
        MediaFormat("audio/x-mulaw", 8000, 1),
        {"caller": "+15550001111", "lang": "en-US"},
    )
    assert parse_inbound(media(3, b"\xff" * 160)) == TwilioMedia(3, SID, b"\xff" * 160, 2, 20)
    assert parse_inbound(mark(4, "utt-1")) == TwilioMark(4, SID, "utt-1")
    assert parse_inbound(DTMF) == TwilioDtmf(5, SID, "1", "inbound_track")
    assert parse_inbound(stop(6)) == TwilioStop(6, SID, ACCOUNT, CALL)


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        ("{not json", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ('{"streamSid": "MZ1"}', "string 'event' field"),
        ('{"event": "flush"}', "unknown Twilio event 'flush'"),
        ('{"event": "connected", "protocol": "Call"}', "'version'"),
        ('{"event": "start", "sequenceNumber": "1"}', "missing object field 'start'"),
        (START.replace('"callSid"', '"callsid"'), "'callSid'"),
        (START.replace('"sampleRate": 8000', '"sampleRate": "8k"'), "'sampleRate'"),
        (START.replace(f'"streamSid": "{SID}"}}', '"streamSid": "MZother"}'), "differs"),
        (START.replace('"lang": "en-US"', '"lang": 5'), "customParameters"),
        (START.replace('["inbound"]', '"inbound"'), "tracks"),
        (media(3, b"x").replace('"3"', '"three"'), "'sequenceNumber'"),
        (media(3, b"x").replace('"sequenceNumber": "3"', '"sequenceNumber": true'), "integer"),
        (media(3, b"x").replace('"sequenceNumber": "3"', '"sequenceNumber": -3'), "integer"),
        (media(3, b"abc").replace("YWJj", "YW!j"), "not base64"),
        (media(3, b"abc").replace(', "timestamp": "20"', ""), "'timestamp'"),
        (mark(4, "a").replace('"name"', '"nom"'), "'name'"),
        (DTMF.replace('"digit"', '"key"'), "'digit'"),
        (stop(6).replace(f', "callSid": "{CALL}"', ""), "'callSid'"),
    ],
)
def test_malformed_messages_raise_clear_errors(frame: str | bytes, message: str) -> None:
    with pytest.raises(TwilioProtocolError, match=message) as info:
        parse_inbound(frame)
    assert isinstance(info.value, VantumError)


def test_builders_produce_twilios_shapes() -> None:
    assert json.loads(media_message(SID, b"\x00\xff")) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": "AP8="},
    }
    assert json.loads(mark_message(SID, "m1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "m1"},
    }
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}
    with pytest.raises(TwilioProtocolError, match="outbound"):
        parse_outbound('{"event": "stop", "streamSid": "x"}')


# --- round trips -------------------------------------------------------------------

_text = st.text(max_size=12)
_n = st.integers(0, 2**40)

_inbound = st.one_of(
    st.builds(TwilioConnected, _text, _text),
    st.builds(
        TwilioStart,
        _n,
        _text,
        _text,
        _text,
        st.lists(_text, max_size=3).map(tuple),
        st.builds(MediaFormat, _text, _n, _n),
        st.dictionaries(_text, _text, max_size=4),
    ),
    st.builds(TwilioMedia, _n, _text, st.binary(max_size=400), _n, _n, _text),
    st.builds(TwilioMark, _n, _text, _text),
    st.builds(TwilioDtmf, _n, _text, _text, _text),
    st.builds(TwilioStop, _n, _text, _text, _text),
)


@given(_inbound)
def test_inbound_events_roundtrip(event: object) -> None:
    wire = encode_inbound(event)  # type: ignore[arg-type]
    assert parse_inbound(wire) == event
    assert parse_inbound(wire.encode()) == event


@given(_text, st.binary(max_size=1000), _text)
def test_outbound_messages_roundtrip(sid: str, audio: bytes, name: str) -> None:
    assert parse_outbound(media_message(sid, audio)) == OutboundMedia(sid, audio)
    assert parse_outbound(mark_message(sid, name)) == OutboundMark(sid, name)
    assert parse_outbound(clear_message(sid)) == OutboundClear(sid)


@given(st.lists(st.binary(max_size=500), max_size=20), st.integers(1, 400))
def test_framing_keeps_every_byte_in_whole_frames(chunks: list[bytes], frame_bytes: int) -> None:
    carry = b""
    out: list[bytes] = []
    for chunk in chunks:
        frames, carry = frame_audio(chunk, frame_bytes, carry)
        assert all(len(f) == frame_bytes for f in frames)
        assert len(carry) < frame_bytes
        out.extend(frames)
    assert b"".join(out) + carry == b"".join(chunks)
    last = pad_frame(carry, frame_bytes)
    assert len(last) % frame_bytes == 0
    assert last.startswith(carry)
    assert set(last[len(carry) :]) <= {mulaw.SILENCE}


def test_default_frames_are_20ms() -> None:
    frames, carry = frame_audio(bytes(500))
    assert [len(f) for f in frames] == [160, 160, 160]
    assert len(carry) == 20
    assert pad_frame(b"") == b""
    with pytest.raises(ValueError):
        frame_audio(b"x", 0)


# --- stream state --------------------------------------------------------------------


def _started() -> TwilioStreamState:
    state = TwilioStreamState()
    state.receive(parse_inbound(CONNECTED))
    state.receive(parse_inbound(START))
    return state


def test_state_follows_a_call() -> None:
    state = TwilioStreamState()
    with pytest.raises(TwilioProtocolError, match="no Twilio stream"):
        _ = state.stream_sid
    phases = [state.phase]
    for frame in (CONNECTED, START, media(2, b"\xff" * 160), DTMF, stop(6)):
        state.receive(parse_inbound(frame))
        phases.append(state.phase)
    assert phases == [Phase.NEW, Phase.CONNECTED, *[Phase.STARTED] * 3, Phase.STOPPED]
    assert state.stream_sid == SID
    assert state.last_sequence_number == 6


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([media(2, b"x")], "media received before start"),
        ([CONNECTED, media(2, b"x")], "media received before start"),
        ([CONNECTED, CONNECTED], "connected received twice"),
        ([CONNECTED, START, CONNECTED], "connected received twice or after start"),
        ([CONNECTED, START, START], "start received twice"),
        ([CONNECTED, START, media(2, b"x", sid="MZevil")], "streamSid 'MZevil'"),
        ([CONNECTED, START, mark(2, "x", sid="MZevil")], "streamSid 'MZevil'"),
        ([CONNECTED, START, media(3, b"x"), media(3, b"x")], "does not follow 3"),
        ([CONNECTED, START, stop(2), media(3, b"x")], "media received after stop"),
        ([CONNECTED, START, mark(2, "never")], "'never' was never sent"),
    ],
)
def test_state_rejects_out_of_order_streams(frames: list[str], message: str) -> None:
    state = TwilioStreamState()
    with pytest.raises(TwilioProtocolError, match=message):
        for frame in frames:
            state.receive(parse_inbound(frame))


def test_marks_measure_played_audio() -> None:
    state = _started()
    state.mark_sent("a", 200)
    state.mark_sent("b", 300)
    state.mark_sent("c", 100)
    assert (state.pending_ms, state.pending_marks) == (600, ("a", "b", "c"))
    state.receive(parse_inbound(mark(2, "a")))
    assert state.played_ms == 200
    with pytest.raises(TwilioProtocolError, match="'c' came back before 'b'"):
        state.mark_received("c")
    assert state.mark_received("b") == 500
    state.clear()  # "c" was queued: its 100 ms are dropped, not played
    assert state.pending_marks == ()
    assert state.cleared_marks == {"c"}
    assert state.mark_received("c") == 500
    state.mark_sent("d", 40)
    assert state.mark_received("d") == 540
    with pytest.raises(ValueError):
        state.mark_sent("d", -1)
    state.mark_sent("e", 0)
    with pytest.raises(ValueError, match="already outstanding"):
        state.mark_sent("e", 10)


class MarkAccounting(RuleBasedStateMachine):
    """Random sends, echoes and clears: played audio only grows, by what was played."""

    def __init__(self) -> None:
        super().__init__()
        self.state = _started()
        self.queue: list[tuple[str, int]] = []  # what Twilio still holds, in order
        self.returning: list[str] = []  # cleared marks Twilio has yet to echo
        self.played = 0
        self.last_played = 0
        self.count = 0

    @rule(audio_ms=st.integers(0, 5000))
    def send_mark(self, audio_ms: int) -> None:
        self.count += 1
        name = f"m{self.count}"
        self.state.mark_sent(name, audio_ms)
        self.queue.append((name, audio_ms))

    @precondition(lambda self: self.queue)
    @rule()
    def twilio_plays_one(self) -> None:
        name, audio_ms = self.queue.pop(0)
        self.played += audio_ms
        assert self.state.mark_received(name) == self.played

    @rule()
    def clear(self) -> None:
        self.state.clear()
        self.returning.extend(name for name, _ in self.queue)
        self.queue.clear()

    @precondition(lambda self: self.returning)
    @rule(data=st.data())
    def twilio_returns_a_cleared_mark(self, data: st.DataObject) -> None:
        name = self.returning.pop(data.draw(st.integers(0, len(self.returning) - 1)))
        assert self.state.mark_received(name) == self.played

    @invariant()
    def played_never_negative_nor_decreasing(self) -> None:
        assert self.state.played_ms >= self.last_played >= 0
        assert self.state.played_ms == self.played
        assert self.state.pending_ms == sum(ms for _, ms in self.queue)
        self.last_played = self.state.played_ms


TestMarkAccounting = MarkAccounting.TestCase


# --- serializer ----------------------------------------------------------------------


def test_twilio_serializer_carries_a_whole_call() -> None:
    ser = TwilioSerializer()
    assert isinstance(ser, MediaStreamSerializer)
    assert ser.sample_rate == 8000
    assert ser.parse(CONNECTED) is None
    start = ser.parse(START)
    assert start == Start(SID, CALL, 8000, {"caller": "+15550001111", "lang": "en-US"})
    heard = ser.parse(media(2, mulaw.encode(np.full(160, 1000, dtype="<i2").tobytes())))
    assert isinstance(heard, AudioIn)
    assert heard.timestamp_ms == 0
    assert np.all(np.abs(np.frombuffer(heard.pcm16, dtype="<i2") - 1000) <= 32)

    pcm = np.zeros(1604, dtype="<i2").tobytes()  # 200.5 ms
    out = parse_outbound(ser.serialize_audio(pcm))
    assert out == OutboundMedia(SID, mulaw.encode(pcm))
    assert parse_outbound(ser.serialize_mark("r1")) == OutboundMark(SID, "r1")
    ser.serialize_audio(pcm)  # the half ms left over carries: 401 ms total
    ser.serialize_mark("r2")
    ser.serialize_audio(pcm)
    ser.serialize_mark("r3")
    assert ser.state.pending_marks == ("r1", "r2", "r3")
    assert ser.state.pending_ms == 200 + 201 + 200

    assert ser.parse(mark(3, "r1")) == Mark("r1", 200)
    assert ser.parse(DTMF.replace('"5"', '"4"')) == DtmfIn("1")
    assert parse_outbound(ser.serialize_clear()) == OutboundClear(SID)
    assert ser.parse(mark(5, "r2")) == Mark("r2", 200, cleared=True)
    assert ser.parse(mark(6, "r3")) == Mark("r3", 200, cleared=True)
    assert ser.parse(stop(7)) == Stop("stop")


def test_serializer_refuses_formats_it_cannot_decode() -> None:
    ser = TwilioSerializer()
    with pytest.raises(TwilioProtocolError, match="no Twilio stream"):
        ser.serialize_audio(bytes(320))
    with pytest.raises(TwilioProtocolError, match="unsupported"):
        ser.parse(START.replace('"sampleRate": 8000', '"sampleRate": 16000'))


# --- TwiML ----------------------------------------------------------------------------


def test_connect_stream_twiml() -> None:
    twiml = connect_stream_twiml("wss://voice.example.com/twilio/stream", {"k": "v"})
    assert twiml == (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        '<Stream url="wss://voice.example.com/twilio/stream">'
        '<Parameter name="k" value="v" /></Stream></Connect></Response>'
    )


def test_twiml_escapes_hostile_values() -> None:
    nasty = {'a"b': "<x/> & 'y'\n\"z\"", "&amp;": "]]>"}
    url = "wss://h.example/s?a=1&b=<2>"
    twiml = connect_stream_twiml(url, nasty)
    root = ET.fromstring(twiml.encode())
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == url
    assert {p.get("name"): p.get("value") for p in stream} == nasty


_xml_text = st.text(
    st.characters(codec="utf-8", exclude_characters="\ufffe\uffff").filter(
        lambda c: c in "\t\n\r" or ord(c) >= 0x20
    ),
    max_size=20,
)


@given(_xml_text, st.dictionaries(_xml_text, _xml_text, max_size=5))
def test_twiml_roundtrips_any_xml_text(path: str, params: dict[str, str]) -> None:
    url = "wss://h.example/" + path
    stream = ET.fromstring(connect_stream_twiml(url, params).encode()).find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == url
    assert {p.get("name"): p.get("value") for p in stream} == params


def test_twiml_refuses_what_xml_cannot_carry() -> None:
    with pytest.raises(ValueError, match="ws:// or wss://"):
        connect_stream_twiml("https://h.example/s", {})
    with pytest.raises(ValueError, match="XML"):
        connect_stream_twiml("wss://h.example/s", {"k": "bell\x07"})
