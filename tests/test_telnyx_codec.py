"""Telnyx's media frames, codecs and webhook signatures, without sockets."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantum.protocol import alaw
from vantum.protocol.telnyx import (
    MediaFormat,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    TelnyxDtmf,
    TelnyxMark,
    TelnyxMedia,
    TelnyxProtocolError,
    TelnyxSerializer,
    TelnyxStop,
    answer_body,
    decode_audio,
    decode_client_state,
    encode_audio,
    encode_client_state,
    encode_inbound,
    parse_outbound,
)
from vantum.protocol.telnyx.webhook import (
    WebhookFailure,
    WebhookSignatureError,
    load_public_key,
    sign_webhook,
    verify_webhook,
)
from vantum.protocol.twilio.carrier import AudioIn, DtmfIn, Mark, MediaStreamSerializer, Start, Stop
from vantum.testing.fake_telnyx import new_signing_key, public_key_b64

# The start frame of Telnyx's own documentation (the AsyncAPI example), verbatim in shape.
SID = "32DE0DEA-53CB-4B21-89A4-9E1819C043BC"
DOC_START: dict[str, Any] = {
    "event": "start",
    "sequence_number": "1",
    "stream_id": "32DE0DEA-53CB-4B21-89A4-9E1819C043BC",
    "start": {
        "user_id": "3E6F995F-85F7-4705-9741-53B116D28237",
        "call_control_id": "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        "call_session_id": "ff55a038-6f5d-11ef-9692-02420aeffb1f",
        "from": "+13122010094",
        "to": "+13122123456",
        "tags": ["TAG1", "TAG2"],
        "client_state": "aGF2ZSBhIG5pY2UgZGF5ID1d",
        "custom_parameters": {"customer_id": "customer_123"},
        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
    },
}


def start_frame(**start: Any) -> str:
    """The documented start frame with some of its ``start`` fields replaced."""
    return json.dumps(dict(DOC_START, start=dict(DOC_START["start"], **start)))


def started() -> TelnyxSerializer:
    serializer = TelnyxSerializer()
    serializer.parse(json.dumps(DOC_START))
    return serializer


def test_the_documented_start_frame_parses_into_a_carrier_start() -> None:
    serializer = TelnyxSerializer()
    assert isinstance(serializer, MediaStreamSerializer)
    assert serializer.parse('{"event": "connected", "version": "1.0.0"}') is None
    start = serializer.parse(json.dumps(DOC_START))
    assert start == Start(
        SID,
        "v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ",
        8000,
        {"customer_id": "customer_123", "From": "+13122010094", "To": "+13122123456"},
    )


def test_media_dtmf_mark_and_stop() -> None:
    serializer = started()
    ulaw = bytes(range(160))
    media = {
        "event": "media",
        "sequence_number": "4",
        "media": {
            "track": "inbound",
            "chunk": "2",
            "timestamp": "5",
            "payload": base64.b64encode(ulaw).decode(),
        },
        "stream_id": SID,
    }
    event = serializer.parse(json.dumps(media))
    assert isinstance(event, AudioIn) and len(event.pcm16) == 320 and event.timestamp_ms == 5
    media["media"]["track"] = "outbound"  # type: ignore[index]
    assert serializer.parse(json.dumps(media)) is None
    dtmf = {"event": "dtmf", "stream_id": SID, "sequence_number": "5", "dtmf": {"digit": "1"}}
    assert serializer.parse(json.dumps(dtmf)) == DtmfIn("1")
    serializer.serialize_audio(bytes(320))
    assert json.loads(serializer.serialize_mark("u:1")) == {
        "event": "mark",
        "mark": {"name": "u:1"},
    }
    assert serializer.parse(encode_inbound(TelnyxMark(6, SID, "u:1"))) == Mark("u:1", 20)
    assert serializer.parse(encode_inbound(TelnyxStop(7, SID, "v2:x"))) == Stop("stop")
    with pytest.raises(TelnyxProtocolError, match="after stop"):
        serializer.parse(encode_inbound(TelnyxDtmf(8, SID, "2")))


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        ("{nope", "not valid JSON"),
        ("[1]", "JSON object"),
        ('{"event": 3}', "string 'event'"),
        ('{"event": "bogus", "stream_id": "x"}', "unknown Telnyx event"),
        ('{"event": "media", "stream_id": "other", "media": {"payload": ""}}', "expected"),
        (json.dumps({"event": "media", "stream_id": SID, "media": {"payload": "***"}}), "base64"),
        (json.dumps({"event": "media", "stream_id": SID}), "'media'"),
        ('{"event": "error", "payload": {"code": 100002, "title": "Unknown error"}}', "100002"),
        (json.dumps(DOC_START), "twice"),
    ],
)
def test_malformed_frames_raise_a_protocol_error(frame: str, needle: str) -> None:
    serializer = started()
    with pytest.raises(TelnyxProtocolError, match=needle):
        serializer.parse(frame)


def test_media_before_start_and_an_unexpected_format_are_refused() -> None:
    with pytest.raises(TelnyxProtocolError, match="before start"):
        TelnyxSerializer().parse(encode_inbound(TelnyxMedia(1, SID, b"\xff", 1, 0)))
    other = start_frame(media_format={"encoding": "OPUS", "sample_rate": 16000, "channels": 1})
    with pytest.raises(TelnyxProtocolError) as info:
        TelnyxSerializer().parse(other)
    assert info.value.event == "start"  # the transport ends such a stream as unusable


def test_client_state_round_trips_and_garbage_is_ignored() -> None:
    params = {"vantumTicket": "t1.1.abc.def", "agent": "sales"}
    assert decode_client_state(encode_client_state(params)) == params
    for junk in (None, "", "aGF2ZSBhIG5pY2UgZGF5ID1d", "***", base64.b64encode(b"[1]").decode()):
        assert decode_client_state(junk) == {}
    serializer = TelnyxSerializer()
    state = encode_client_state({"vantumTicket": "t", "From": "+1666"})
    start = serializer.parse(start_frame(client_state=state))
    assert isinstance(start, Start)
    # Our state reaches the session; who is calling stays what Telnyx says.
    assert start.custom_parameters["vantumTicket"] == "t"
    assert start.custom_parameters["From"] == "+13122010094"


def test_answer_body_asks_for_bidirectional_rtp_in_the_serializers_codec() -> None:
    body = answer_body("wss://x/telnyx/stream", "c3RhdGU=", MediaFormat("PCMA", 8000))
    assert body["stream_bidirectional_mode"] == "rtp"
    assert body["stream_codec"] == body["stream_bidirectional_codec"] == "PCMA"
    assert body["stream_bidirectional_sampling_rate"] == 8000
    assert body["client_state"] == "c3RhdGU="


@given(st.binary(max_size=2000).map(lambda b: b[: len(b) // 2 * 2]))
def test_l16_is_big_endian_on_the_wire_and_exact(pcm: bytes) -> None:
    fmt = MediaFormat("L16", 16000)
    wire = encode_audio(fmt, pcm)
    assert wire == np.frombuffer(pcm, "<i2").byteswap().tobytes()
    assert decode_audio(fmt, wire) == pcm


@given(st.binary(max_size=512))
def test_alaw_codes_survive_a_round_trip(codes: bytes) -> None:
    assert alaw.encode(alaw.decode(codes)) == codes


def test_alaw_error_is_within_half_a_step() -> None:
    pcm = np.arange(-32768, 32768, dtype="<i2")
    back = np.frombuffer(alaw.decode(alaw.encode(pcm.tobytes())), "<i2").astype(int)
    err = np.abs(back - pcm.astype(int))
    # Segment steps are 16 (two lowest segments) up to 1024: half a step at most.
    step = np.maximum(16, 2 ** (np.floor(np.log2(np.maximum(np.abs(pcm.astype(int)), 1))) - 4))
    assert np.all(err <= step / 2 + 8)
    assert alaw.encode(b"\0\0") == bytes([alaw.SILENCE])


@given(
    st.lists(st.sampled_from(["audio", "mark", "echo", "clear"]), max_size=60),
    st.sampled_from(
        [MediaFormat("PCMU", 8000), MediaFormat("PCMA", 8000), MediaFormat("L16", 16000)]
    ),
)
def test_outbound_frames_parse_back_and_played_ms_never_counts_cleared_audio(
    ops: list[str], fmt: MediaFormat
) -> None:
    serializer = TelnyxSerializer(fmt)
    media_format = {"encoding": fmt.encoding, "sample_rate": fmt.sample_rate, "channels": 1}
    serializer.parse(start_frame(media_format=media_format))
    frame = bytes(2 * fmt.sample_rate // 50)
    pending: list[str] = []
    cleared: list[str] = []
    sent_ms = played = 0
    n = 0
    for op in ops:
        if op == "audio":
            out = parse_outbound(serializer.serialize_audio(frame))
            assert isinstance(out, OutboundMedia) and len(decode_audio(fmt, out.payload)) == len(
                frame
            )
            sent_ms += 20
        elif op == "mark":
            n += 1
            assert parse_outbound(serializer.serialize_mark(f"m{n}")) == OutboundMark(f"m{n}")
            pending.append(f"m{n}")
        elif op == "clear":
            assert parse_outbound(serializer.serialize_clear()) == OutboundClear()
            cleared += pending
            pending = []
            sent_ms = 0
        elif pending or cleared:
            name = cleared.pop(0) if cleared else pending.pop(0)
            event = serializer.parse(encode_inbound(TelnyxMark(n, SID, name)))
            assert isinstance(event, Mark)
            assert event.played_ms >= played
            played = event.played_ms
    assert played <= 20 * ops.count("audio")


def test_webhook_signature_checks() -> None:
    key = new_signing_key()
    public = load_public_key(public_key_b64(key))
    body = b'{"data": {"event_type": "call.initiated"}}'
    sig = sign_webhook(key, body, 1_800_000_000)
    verify_webhook(public, body, sig, "1800000000", now=1_800_000_100)

    def reason(**kw: object) -> WebhookFailure:
        args: dict[str, object] = {
            "body": body,
            "signature": sig,
            "timestamp": "1800000000",
            "now": 1_800_000_100,
        }
        args.update(kw)
        with pytest.raises(WebhookSignatureError) as info:
            verify_webhook(public, **args)  # type: ignore[arg-type]
        return info.value.reason

    assert reason(signature=None) is WebhookFailure.MISSING
    assert reason(timestamp="soon") is WebhookFailure.MALFORMED
    assert reason(signature="AAAA") is WebhookFailure.MALFORMED
    assert reason(now=1_800_000_301) is WebhookFailure.STALE
    assert reason(body=body + b" ") is WebhookFailure.BAD_SIGNATURE
    assert reason(timestamp="1800000001") is WebhookFailure.BAD_SIGNATURE
    forged = sign_webhook(new_signing_key(), body, 1_800_000_000)
    assert reason(signature=forged) is WebhookFailure.BAD_SIGNATURE
