"""The inbound WebSocket inspector (sans-I/O), checked against wsproto itself: it must
never object to a stream wsproto accepts, must object exactly where the limit or UTF-8
is broken, and must say the same whatever way the bytes are split into reads."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st
from wsproto.extensions import Extension, PerMessageDeflate
from wsproto.frame_protocol import FrameProtocol, ParseFailed

from vantum.server.ws_inspect import (
    DEFLATE_MAX_RATIO,
    InboundFrames,
    Violation,
    close_code_sent,
    close_frame,
)
from vantum.testing.raw_ws import OP_BINARY, OP_CONTINUATION, OP_TEXT, client_frame

LIMIT = 4096


def reads(data: bytes, cuts: list[int]) -> list[bytes]:
    """``data`` split at ``cuts``, as a server's reads might return it."""
    bounds = sorted({0, len(data), *(c % (len(data) + 1) for c in cuts)})
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


def feed_in_chunks(
    inspector: InboundFrames, data: bytes, cuts: list[int]
) -> tuple[int, Violation | None]:
    """Feed ``data`` split at ``cuts``; returns how many bytes were handed on before the
    violation (or all of them) and the violation."""
    handed = 0
    for chunk in reads(data, cuts):
        while chunk:
            n, violation = inspector.feed(chunk)
            if violation is not None:
                return handed + violation.offset, violation
            handed += n
            chunk = chunk[n:]
    return handed, None


def wsproto_verdict(data: bytes, *, deflate: bool = False) -> int | None:
    """What wsproto's server side makes of the stream: None, or its close code."""
    extensions: list[Extension] = []
    if deflate:
        ext = PerMessageDeflate()
        ext.accept("permessage-deflate")
        extensions.append(ext)
    proto = FrameProtocol(client=False, extensions=extensions)
    proto.receive_bytes(data)
    try:
        for _ in proto.received_frames():
            pass
    except ParseFailed as exc:
        return int(exc.code)
    return None


messages = st.lists(
    st.tuples(
        st.one_of(st.binary(max_size=LIMIT), st.text(max_size=LIMIT // 4)),
        st.integers(1, 4),  # fragments
        st.booleans(),  # a ping in the middle
    ),
    max_size=6,
)


def client_stream(items: list[tuple[bytes | str, int, bool]], *, deflate: bool = False) -> bytes:
    extensions: list[Extension] = []
    if deflate:
        ext = PerMessageDeflate()
        ext.finalize("permessage-deflate")
        extensions.append(ext)
    proto = FrameProtocol(client=True, extensions=extensions)
    out = bytearray()
    for payload, parts, ping in items:
        step = max(1, len(payload) // parts)
        pieces = [payload[i : i + step] for i in range(0, len(payload), step)] or [payload]
        for i, piece in enumerate(pieces):
            out += proto.send_data(piece, fin=i == len(pieces) - 1)
            # Mid-message control frames are legal, but wsproto's deflate gets them wrong.
            if ping and (i == 0 if not deflate else i == len(pieces) - 1):
                out += proto.ping(b"are you there")
    return bytes(out)


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(0, 10**6), max_size=8), st.booleans())
def test_streams_wsproto_accepts_pass_untouched(
    items: list[tuple[bytes | str, int, bool]], cuts: list[int], deflate: bool
) -> None:
    data = client_stream(items, deflate=deflate)
    assert wsproto_verdict(data, deflate=deflate) is None
    inspector = InboundFrames(LIMIT, deflate=deflate)
    handed, violation = feed_in_chunks(inspector, data, cuts)
    assert violation is None and not inspector.lost
    assert handed == len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=300),
    st.integers(1, 3 * LIMIT),
    st.integers(1, 3),
    st.lists(st.integers(0, 10**6), max_size=8),
)
@example(b"", 4097, 1, [7])  # a read that ends one byte into the offending frame's header
def test_an_oversize_message_is_refused_at_the_header_that_takes_it_over(
    before: bytes, size: int, parts: int, cuts: list[int]
) -> None:
    """The frames before it are handed on; not one byte of the offending frame's payload
    is. (Header bytes that arrived in an earlier read than the rest of the header have
    been handed on by then: harmless, a partial header makes wsproto buffer nothing.)"""
    prefix = client_frame(OP_BINARY, before)
    frames, start_of_bad, bad_header = bytearray(), None, 0
    step = -(-size // parts)
    total = 0
    for i in range(parts):
        length = min(step, size - total)
        if length <= 0:
            break
        opcode = OP_BINARY if i == 0 else OP_CONTINUATION
        if total + length > LIMIT and start_of_bad is None:
            start_of_bad = len(prefix) + len(frames)
            bad_header = len(client_frame(opcode, bytes(length))) - length
        frames += client_frame(opcode, bytes(length), fin=total + length == size)
        total += length
    data = prefix + bytes(frames)
    handed, violation = feed_in_chunks(InboundFrames(LIMIT), data, cuts)
    if size <= LIMIT:
        assert violation is None and handed == len(data)
    else:
        assert violation is not None and violation.code == 1009 and violation.cut == "oversize"
        assert start_of_bad is not None
        assert start_of_bad <= handed < start_of_bad + bad_header


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=12), st.text(max_size=4).map(str.encode)), max_size=4),
    st.lists(st.integers(0, 10**6), max_size=6),
)
def test_text_is_judged_utf8_exactly_as_wsproto_judges_it(
    pieces: list[bytes], cuts: list[int]
) -> None:
    """A text message in fragments of arbitrary bytes (often splitting characters)."""
    pieces = pieces or [b""]
    data = b"".join(
        client_frame(OP_TEXT if i == 0 else OP_CONTINUATION, piece, fin=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    )
    expected = wsproto_verdict(data)
    _, violation = feed_in_chunks(InboundFrames(LIMIT), data, cuts)
    assert (violation.code if violation else None) == expected
    if violation is not None:
        assert violation.cut == "bad_frame"


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.lists(st.integers(0, 10**6), max_size=8))
def test_compressed_payload_is_handed_on_in_steps_that_cannot_inflate_past_the_limit(
    megabytes: int, cuts: list[int]
) -> None:
    """Zeros: a few KiB on the wire that inflate to megabytes, past a 1 MiB limit. The
    frame is short enough to pass; what wsproto inflates from each step is not."""
    limit = 1 << 20
    data = client_stream([(bytes(megabytes << 20), 1, False)], deflate=True)
    inspector = InboundFrames(limit, deflate=True)
    assert inspector.step * DEFLATE_MAX_RATIO <= limit
    handed = 0
    for chunk in reads(data, cuts):
        while chunk:
            n, violation = inspector.feed(chunk)
            assert violation is None
            # A frame header (at most 14 bytes) may ride along with a step of payload.
            assert n <= inspector.step + 14
            handed += n
            chunk = chunk[n:]
    assert handed == len(data)


def test_what_it_does_not_follow_is_left_to_wsproto() -> None:
    unmasked = b"\x82\x03abc"
    reserved_opcode = client_frame(0x3, b"x")
    rsv_without_extension = client_frame(OP_BINARY, b"x", rsv=0x40)
    continuation_first = client_frame(OP_CONTINUATION, b"x")
    for data in (unmasked, reserved_opcode, rsv_without_extension, continuation_first):
        inspector = InboundFrames(LIMIT)
        assert inspector.feed(data) == (len(data), None)
        assert inspector.lost
        assert wsproto_verdict(data) == 1002  # wsproto fails it; the guard owes a 1002


def test_close_frames_both_ways() -> None:
    frame = close_frame(1009, "message of at least 5000 bytes exceeds the limit of 4096")
    assert close_code_sent(frame) == 1009
    assert close_code_sent(b"\x88\x00") == 1005
    assert close_code_sent(b"\x82\x02hi") is None
    assert len(close_frame(1002, "x" * 500)) == 2 + 125  # a control frame's payload limit
    inspector = InboundFrames(LIMIT)
    inspector.feed(client_frame(0x8, b"\x03\xe8"))
    assert inspector.peer_closed
