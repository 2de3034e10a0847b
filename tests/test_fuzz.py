"""Fuzzing the decoders and a live session with hypothesis.

The pure codecs must be total: any input yields a value or the codec's own
protocol error, nothing else. The live server must answer every bad frame with
at most one error event, keep the session usable, and keep other sessions whole.
"""

from __future__ import annotations

import base64
import json
import logging
import os
from typing import Any

import msgpack
import pytest
import trio
from e2e_helpers import FAST_CA, speak_turn
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from vantum.errors import ProtocolError
from vantum.protocol import client_events, envelope
from vantum.protocol import events as ev
from vantum.protocol.client_events import InputChunk, InputEnd, InputStart, TextInput
from vantum.protocol.twilio import (
    TwilioMark,
    TwilioProtocolError,
    TwilioStreamState,
    parse_inbound,
)
from vantum.testing.browser_client import BrowserClient, TurnResult
from vantum.testing.fake_deepgram import FakeDeepgramConfig
from vantum.testing.fake_openai import FakeOpenAIConfig
from vantum.testing.stack import open_stack

SID = "0190b7f2-4c2e-7d3a-9b1e-5f6a7b8c9d0e"

# --- strategies ----------------------------------------------------------------------
# Generation dominates the run time, so most fields draw once from a list of
# interesting values and only one slot per frame gets a freely generated value.

SCALE = float(os.environ.get("VANTUM_FUZZ_SCALE", "1"))
"""Multiply example counts (e.g. 10 for a longer local run); 1 keeps the file under 60 s."""


def examples(n: int) -> int:
    return max(1, int(n * SCALE))


JUNK: list[Any] = [
    None, True, False, 0, -1, 1, 2**63 - 1, -(2**63), 2**64 - 1, 0.5, float("nan"),
    float("inf"), "", " ", "x", "é" * 3, "\x00", "9" * 40, b"", b"\x00\x01", b"\xff" * 3,
    [], [1, "a"], {}, {"a": 1}, {"": None}, {"k": {"n": [b"x"]}},
]  # fmt: skip
junk = st.sampled_from(JUNK)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12)
    | st.binary(max_size=32)
)
values = (
    scalars
    | st.lists(scalars, max_size=3)
    | st.dictionaries(st.text(max_size=6), scalars, max_size=3)
)
"""Any MessagePack/JSON-ish value, two levels deep."""

EVENT_TYPES = sorted(
    ev.CLIENT_EVENTS | set(ev.INPUT_ALIASES) | {ev.CONNECTION_ACK, ev.METRICS_TURN, "", "audio."}
)
FIELDS: dict[str, list[Any]] = {
    "samplingRate": [8_000, 16_000, 48_000, 5_000, 96_000, 0, -1, 16_000.0, "16000"],
    "language": ["en-US", "x", "fr-FR" * 5],
    "voiceId": ["v1", ""],
    "encoding": ["pcm16", "opus"],
    "turnMode": ["manual", "auto", "push"],
    "audio": [b"", b"\x00\x01" * 160, b"\x7f" * 321, bytes(range(256)) * 4],
    "isMuted": [True, False],
    "text": ["hello", " ", "y" * 4001, "\u202e\x00"],
}


@st.composite
def payloads(draw: st.DrawFn) -> Any:
    if draw(st.integers(0, 9)) == 0:
        return draw(values)
    keys: set[str] = draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=4))
    payload: dict[str, Any] = {k: draw(st.sampled_from(FIELDS[k]) | junk) for k in keys}
    replace_one: bool = draw(st.booleans())
    if keys and replace_one:
        payload[draw(st.sampled_from(sorted(keys)))] = draw(values)
    return payload


@st.composite
def frames(draw: st.DrawFn, session_id: str = SID) -> bytes | str:
    """One client message: random bytes, a text frame, or a msgpack map of random quality."""
    kind = draw(st.sampled_from(["map", "map", "map", "map", "bytes", "truncated", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=512))
    if kind == "text":
        return draw(st.text(max_size=64))
    frame: dict[str, Any] = {
        "eventType": draw(st.sampled_from(EVENT_TYPES) | junk),
        "eventId": draw(st.sampled_from(["id-1", "0190b7f2-aaaa-7bbb-8ccc-000000000001"]) | junk),
        "sessionId": draw(st.sampled_from([session_id] * 3 + ["", "other", 7])),
        "payload": draw(payloads()),
    }
    for key in draw(st.sets(st.sampled_from(sorted(frame)), max_size=2)):
        del frame[key]
    data: bytes = msgpack.packb(frame, use_bin_type=True)
    if kind == "truncated":
        return data[: draw(st.integers(0, max(0, len(data) - 1)))]
    return data


def decode_and_parse(data: bytes, session_id: str = SID) -> client_events.ClientEvent:
    return client_events.parse(envelope.decode(data), session_id)


# --- the browser codec ---------------------------------------------------------------


@settings(max_examples=examples(1000), deadline=None)
@given(st.binary(max_size=1024))
def test_envelope_decoder_is_total_over_bytes(data: bytes) -> None:
    try:
        env = envelope.decode(data)
    except ProtocolError as exc:
        assert exc.event_type == ev.ERR_MALFORMED and exc.message
        return
    assert isinstance(env.event_type, str) and env.event_type
    assert isinstance(env.payload, dict)


def mutants(data: bytes, seed: int) -> list[bytes]:
    """Every prefix and every single-bit flip of ``data``: cheap extra inputs near a valid one."""
    flips = [
        data[:i] + bytes([data[i] ^ (1 << ((seed + i) % 8))]) + data[i + 1 :]
        for i in range(len(data))
    ]
    return [data[:i] for i in range(len(data))] + flips


@settings(max_examples=examples(800), deadline=None)
@given(frames(), st.integers(0, 7))
def test_decode_and_parse_yield_valid_events_or_protocol_errors(
    data: bytes | str, seed: int
) -> None:
    raw = data.encode() if isinstance(data, str) else data
    for variant in [raw, *mutants(raw, seed)]:
        check_decode_and_parse(variant)


def check_decode_and_parse(data: bytes) -> None:
    try:
        event = decode_and_parse(data)
    except ProtocolError as exc:
        assert exc.event_type.startswith(("error.", "connection.", "audio.", "conversation."))
        assert ".error." in exc.event_type or exc.event_type.startswith("error.")
        assert isinstance(exc.request_type, str) and exc.message
        return
    # Whatever gets through obeys docs/protocol.md.
    if isinstance(event, InputStart):
        assert client_events.MIN_RATE <= event.sampling_rate <= client_events.MAX_RATE
        assert event.turn_mode in ("manual", "auto") and event.encoding == "pcm16"
    elif isinstance(event, InputChunk):
        assert isinstance(event.audio, bytes) and len(event.audio) % 2 == 0
    elif isinstance(event, TextInput):
        assert event.text.strip() == event.text and 0 < len(event.text) <= 4000
    else:
        assert isinstance(event, InputEnd)


# --- the Twilio codec ---------------------------------------------------------------

TWILIO_EVENTS = ["connected", "start", "media", "mark", "dtmf", "stop", "x"]
NUMBERS: list[Any] = [0, 1, 2, 3, 5, 8, "1", "2", "3", "007", "-1", "1e3", "", "²", 1.5, True]
B64 = [base64.b64encode(b"\xff" * 160).decode(), "", "!!notbase64", "AAA", "AAAA===="]


@st.composite
def twilio_messages(draw: st.DrawFn) -> dict[str, Any]:
    """A Twilio media-stream message, every field plausible, wrong or missing."""
    sid = draw(st.sampled_from(["MZ1", "MZ2"]) | junk)
    num = st.sampled_from(NUMBERS) | junk
    body: dict[str, Any] = {
        "event": draw(st.sampled_from(TWILIO_EVENTS) | junk),
        "sequenceNumber": draw(num),
        "streamSid": sid,
        "protocol": "Call",
        "version": "1.0.0",
        "start": {
            "accountSid": "AC1",
            "callSid": "CA1",
            "streamSid": sid,
            "tracks": draw(st.sampled_from([["inbound"], ["inbound", "outbound"], "inbound"])),
            "mediaFormat": draw(
                st.sampled_from(
                    [{"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}, {}]
                )
                | junk
            ),
            "customParameters": draw(st.sampled_from([{}, {"a": "b"}, {"n": 1}]) | junk),
        },
        "media": {
            "track": "inbound",
            "chunk": draw(num),
            "timestamp": draw(num),
            "payload": draw(st.sampled_from(B64) | junk),
        },
        "mark": {"name": draw(st.sampled_from(["m1", "m2", "m3"]) | junk)},
        "dtmf": {"digit": draw(st.sampled_from(["1", "#"]) | junk)},
        "stop": {"accountSid": "AC1", "callSid": "CA1"},
    }
    for key in draw(st.sets(st.sampled_from(sorted(body)), max_size=3)):
        del body[key]
    if draw(st.integers(0, 4)) == 0:
        body[draw(st.sampled_from(sorted(body) or ["event"]))] = draw(values)
    return body


def to_json(msg: dict[str, Any]) -> str:
    return json.dumps(msg, default=lambda b: base64.b64encode(b).decode())


@settings(max_examples=examples(800), deadline=None)
@given(st.binary(max_size=512) | st.text(max_size=256) | twilio_messages().map(to_json))
def test_twilio_parse_inbound_is_total(data: bytes | str) -> None:
    raw = data.encode() if isinstance(data, str) else data
    for variant in [raw, *mutants(raw, len(raw))[:: max(1, len(raw) // 64)]]:
        try:
            parse_inbound(variant)
        except TwilioProtocolError as exc:
            assert exc.message


def stream_message(event: str, seq: int, sid: str, name: str) -> str:
    """Well-formed Twilio frames, so a sequence gets deep into the stream state."""
    head = {"event": event, "sequenceNumber": str(seq), "streamSid": sid}
    bodies: dict[str, dict[str, Any]] = {
        "connected": {"protocol": "Call", "version": "1.0.0"},
        "start": {"start": {"accountSid": "AC1", "callSid": "CA1", "streamSid": sid}},
        "media": {"media": {"chunk": str(seq), "timestamp": str(20 * seq), "payload": B64[0]}},
        "mark": {"mark": {"name": name}},
        "dtmf": {"dtmf": {"digit": "5"}},
        "stop": {"stop": {"accountSid": "AC1", "callSid": "CA1"}},
    }
    return json.dumps({**head, **bodies[event]})


stream_messages = st.builds(
    stream_message,
    st.sampled_from(["connected", "start", "media", "media", "mark", "mark", "dtmf", "stop"]),
    st.integers(0, 40),
    st.sampled_from(["MZ1", "MZ1", "MZ1", "MZ2"]),
    st.sampled_from(["m1", "m2", "m3"]),
)


@settings(max_examples=examples(200), deadline=None)
@given(
    st.lists(
        st.one_of(
            stream_messages,
            st.tuples(st.just("sent"), st.sampled_from(["m1", "m2", "m3"]), st.integers(0, 500)),
            st.just("clear"),
        ),
        max_size=40,
    )
)
def test_twilio_stream_state_survives_any_sequence(steps: list[Any]) -> None:
    state = TwilioStreamState()
    played = 0
    for step in steps:
        if step == "clear":
            state.clear()
        elif isinstance(step, tuple):
            _, name, ms = step
            try:
                state.mark_sent(name, ms)
            except ValueError:
                assert name in state.pending_marks or name in state.cleared_marks
        else:
            try:
                event = state.receive(parse_inbound(step))
            except TwilioProtocolError:
                continue
            if isinstance(event, TwilioMark):
                assert event.name not in state.pending_marks
        assert state.played_ms >= played and state.pending_ms >= 0
        played = state.played_ms


@pytest.mark.parametrize(
    "frame",
    [
        json.dumps(
            {
                "event": "mark",
                "sequenceNumber": "9" * 5000,
                "streamSid": "MZ1",
                "mark": {"name": "m"},
            }
        ),
        '{"event": "start", "start": ' + "[" * 50_000 + "]" * 50_000 + "}",
        json.dumps(
            {"event": "media", "sequenceNumber": "2", "streamSid": "MZ1", "media": {"payload": "é"}}
        ),
    ],
    ids=["huge-digit-string", "deep-nesting", "non-ascii-base64"],
)
def test_twilio_hostile_frames_are_protocol_errors(frame: str) -> None:
    with pytest.raises(TwilioProtocolError):
        parse_inbound(frame)


# --- a live session ------------------------------------------------------------------

PROBE = "fuzz probe"
CHAOS_DG = FakeDeepgramConfig(script=("hello there",), final_latency=0.02, interim_latency=0.01)


def tiny_answers(messages: list[dict[str, Any]]) -> str:
    """Echo the probe and the bystander; answer fuzz with a word, so backlogs drain fast."""
    said = str(messages[-1]["content"])
    return f"You said: {said}." if PROBE in said or said == "hello there" else "Ok."


CHAOS_OA = FakeOpenAIConfig(first_token_latency=0.0, tokens_per_second=5000, responder=tiny_answers)


def expected_reply(data: bytes | str, session_id: str) -> tuple[str, str, str] | None:
    """(event type, eventId or "" for a fresh one, sessionId) the server must send for
    a frame that starts no turn: errors and ACKs echo the frame's ids where readable.

    None for frames that are valid and would start or feed a conversation.
    """
    if isinstance(data, str):
        return ev.ERR_MALFORMED, "", session_id
    try:
        event = decode_and_parse(data, session_id)
    except ProtocolError as exc:
        return exc.event_type, exc.event_id or "", exc.session_id or session_id
    if isinstance(event, InputChunk):
        # no audio.input.start is ever sent in this phase
        return ev.ERR_NOT_STARTED, event.event_id, session_id
    if isinstance(event, InputEnd):
        return event.name, event.event_id, session_id  # ACK; nothing to finish
    return None


def with_session(data: bytes | str, session_id: str) -> bytes | str:
    """Frames are drawn before the server picks a sessionId; swap in the real one."""
    return data.replace(SID.encode(), session_id.encode()) if isinstance(data, bytes) else data


async def ask(client: BrowserClient, text: str) -> TurnResult:
    """Send a text turn; return the turn whose answer echoes it (earlier turns may come first)."""
    await client.send(ev.TEXT_INPUT, {"text": text})
    with trio.fail_after(20):
        while True:
            turn = await client.collect_turn()
            if text in " ".join(turn.text):
                return turn


def amplify(drawn: list[bytes | str], seed: int, per_frame: int = 4) -> list[bytes | str]:
    """Each drawn frame plus ``per_frame`` of its prefixes and bit flips, in order.

    Hypothesis caps how much data one example may draw, so the bulk of the frames
    are cheap, deterministic mutants of the drawn ones (mostly just-invalid frames).
    """
    out: list[bytes | str] = []
    for i, frame in enumerate(drawn):
        out.append(frame)
        if isinstance(frame, bytes) and frame:
            variants = mutants(frame, seed + i)
            step = max(1, len(variants) // per_frame)
            out += variants[(seed + i) % step :: step][:per_frame]
    return out


@settings(
    max_examples=examples(3),
    deadline=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],  # shrinking a live run takes forever
    suppress_health_check=list(HealthCheck),
)
@given(
    strict=st.lists(frames(), min_size=80, max_size=80),
    chaos=st.lists(frames(), min_size=80, max_size=80),
    seed=st.integers(0, 2**16),
)
async def test_live_session_survives_random_frames(
    strict: list[bytes | str],
    chaos: list[bytes | str],
    seed: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING)
    with trio.fail_after(60):
        await fuzz_live_session(amplify(strict, seed), amplify(chaos, seed))
    problems = [
        r
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name.startswith(("vantum", "hypercorn"))
    ]
    assert problems == [], [r.getMessage() for r in problems]


async def fuzz_live_session(strict: list[bytes | str], chaos: list[bytes | str]) -> None:
    async with open_stack(deepgram=CHAOS_DG, openai=CHAOS_OA, cartesia=FAST_CA) as stack:
        async with (
            BrowserClient.connect(stack.ws_url) as client,
            BrowserClient.connect(stack.ws_url) as bystander,
        ):
            sid = client.session_id
            async with trio.open_nursery() as nursery:
                nursery.start_soon(check_bystander, bystander)

                # Phase 1: frames that start nothing get exactly their one reply, in order.
                sent = [with_session(f, sid) for f in strict]
                expected = [r for r in (expected_reply(f, sid) for f in sent) if r is not None]
                for data in sent:
                    if expected_reply(data, sid) is not None:
                        await client.send_raw(data)
                with trio.fail_after(10):
                    for kind, event_id, session_id in expected:
                        reply = await client.next_event()
                        assert reply["eventType"] == kind, (reply, kind)
                        assert reply["sessionId"] == session_id
                        if event_id:
                            assert reply["eventId"] == event_id
                        if ev.is_error(kind):
                            assert reply["payload"]["message"] and "requestType" in reply
                # Nothing extra was sent: the next events belong to this answer.
                first = await ask(client, f"{PROBE} one")
                assert first.errors == [] and first.events[0]["eventType"] == ev.RESPONSE_START

                # Phase 2: everything, valid frames included, as fast as it goes.
                for data in chaos:
                    await client.send_raw(with_session(data, sid))
                second = await ask(client, f"{PROBE} two")
                assert second.audio_seconds > 0
            # (an ACK echoes the client's name: voicechat.audio.* for the alias)
            known_prefixes = tuple(
                f"{d}." for d in ("audio", "conversation", "transcript", "voicechat.audio")
            )
            for event in client.events:
                kind = event["eventType"]
                assert (
                    kind.startswith(known_prefixes)
                    or ".error." in kind
                    or kind
                    in (
                        ev.CONNECTION_ACK,
                        ev.METRICS_TURN,
                        ev.ERR_MALFORMED,
                    )
                ), event
        with trio.fail_after(5):
            await stack.app.wait_idle()


async def check_bystander(client: BrowserClient) -> None:
    """A well-behaved caller on the same server, talking throughout the fuzzing."""
    for _ in range(2):
        turn = await speak_turn(client, 16_000, seconds=0.6)
        assert turn.errors == [] and turn.finals == ["hello there"]
        assert turn.text == ["You said: hello there."] and turn.audio_seconds > 0.3
