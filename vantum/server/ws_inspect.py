"""Reading a client's WebSocket byte stream as it arrives, before anything buffers it.

Sans-I/O: :class:`InboundFrames` is fed the raw bytes of an upgraded connection (by
``connections.GuardedStream``, before Hypercorn and wsproto see them) and says where
the peer broke the rules:

- a data frame whose declared length takes its message over the limit: **1009**,
  decided from the frame *header*, so not one byte of the payload is buffered;
- a text message that is not UTF-8: **1007** (RFC 6455 §8.1), where wsproto would
  drop the TCP connection with no close frame at all.

It follows framing only as far as it must (headers, masks, fragmentation, the UTF-8 of
uncompressed text) and never decides what it cannot see: anything it does not
understand (an unmasked frame, a reserved opcode, RSV bits nothing negotiated) makes it
stand aside (``lost``) and leaves the verdict to wsproto, whose silent drop the guard
then turns into a 1002 close.

Compressed (permessage-deflate) payloads cannot be measured from headers: the limit
then applies to what wsproto inflates. ``feed`` hands such payload on in steps of
``max_message / 1032`` bytes (deflate's largest expansion), so one step can never
inflate to more than about ``max_message`` before Hypercorn's own limit trips.
"""

from __future__ import annotations

import codecs
import struct

import attrs

CLOSE_PROTOCOL_ERROR = 1002
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009
FAILURE_CODES = frozenset({CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG})
"""Close codes that fail a connection because of what the peer sent."""

DEFLATE_MAX_RATIO = 1032
"""zlib cannot inflate one input byte to more than this many output bytes."""

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


@attrs.frozen
class Violation:
    code: int
    """The close code owed to the peer."""
    reason: str
    cut: str
    """Why the connection is cut, as metrics and call records say it: oversize, bad_frame."""
    offset: int
    """Bytes of the chunk just fed that precede the offending frame (they are fine)."""


def close_frame(code: int, reason: str) -> bytes:
    """A server close frame (unmasked); the reason is cut to fit a control frame."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return struct.pack("!BB", 0x88, len(payload)) + payload


def close_code_sent(frame: bytes | bytearray | memoryview) -> int | None:
    """The code of the server frame starting ``frame`` if it is a close frame, else None
    (1005 for a close frame without a code)."""
    if len(frame) < 2 or frame[0] & 0x0F != 0x8:
        return None
    if frame[1] & 0x7F < 2 or len(frame) < 4:
        return 1005
    code: int = struct.unpack_from("!H", frame, 2)[0]
    return code


def _unmask(chunk: memoryview, mask: bytes, pos: int) -> bytes:
    n, r = len(chunk), pos & 3
    key = (mask[r:] + mask[:r]) * (n // 4 + 1)
    value = int.from_bytes(chunk, "little") ^ int.from_bytes(key[:n], "little")
    return value.to_bytes(n, "little")


class InboundFrames:
    """The client-to-server half of one WebSocket connection, read as it arrives."""

    def __init__(self, max_message: int, *, deflate: bool = False) -> None:
        self.max_message = max_message
        self.deflate = deflate
        """permessage-deflate was negotiated: RSV1 marks a compressed message."""
        self.step = max(64, max_message // DEFLATE_MAX_RATIO)
        """Compressed payload bytes handed on at a time."""
        self.lost = False
        """Met something it does not follow; everything is passed on unjudged from here."""
        self.failed: Violation | None = None
        self.peer_closed = False
        """The peer sent a close frame."""
        self._head = bytearray()
        self._need = 2
        self._in_payload = False
        self._left = 0
        self._fin = False
        self._control = False
        self._mask = b""
        self._pos = 0
        self._message = False
        self._message_bytes = 0
        self._compressed = False
        self._decoder: codecs.IncrementalDecoder | None = None

    def feed(self, data: bytes | bytearray | memoryview) -> tuple[int, Violation | None]:
        """Read ``data``; returns how much of it may be handed on now, and a violation.

        The count is ``len(data)`` unless a compressed payload used up its step: the rest
        must be fed again later. With a violation, only ``violation.offset`` bytes may
        be handed on; the inspector reads nothing more.
        """
        view = memoryview(data)
        n = len(view)
        if self.lost or self.failed is not None:
            return n, None
        i = 0
        budget = self.step
        frame_start = 0 if not (self._in_payload or self._head) else -1
        while i < n:
            if not self._in_payload:
                if not self._head:
                    frame_start = i
                take = min(self._need - len(self._head), n - i)
                self._head += view[i : i + take]
                i += take
                if len(self._head) < self._need:
                    break
                if self._need == 2:
                    self._need = _header_length(self._head)
                    if len(self._head) < self._need:
                        continue
                violation = self._start_frame()
                if violation is not None:
                    return self._fail(violation, frame_start)
                if self.lost:
                    return n, None
                if not self._in_payload:
                    violation = self._end_frame()
                    if violation is not None:
                        return self._fail(violation, frame_start)
                continue
            take = min(self._left, n - i)
            if self._compressed and not self._control:
                if budget == 0:
                    return i, None
                take = min(take, budget)
                budget -= take
            if self._decoder is not None and not self._control:
                try:
                    self._decoder.decode(_unmask(view[i : i + take], self._mask, self._pos))
                except UnicodeDecodeError:
                    return self._fail(_NOT_UTF8, frame_start)
            i += take
            self._left -= take
            self._pos += take
            if self._left == 0:
                self._in_payload = False
                violation = self._end_frame()
                if violation is not None:
                    return self._fail(violation, frame_start)
        return n, None

    def _fail(self, violation: Violation, frame_start: int) -> tuple[int, Violation]:
        violation = attrs.evolve(violation, offset=max(frame_start, 0))
        self.failed = violation
        return violation.offset, violation

    def _start_frame(self) -> Violation | None:
        head = self._head
        b0, b1 = head[0], head[1]
        fin, rsv, opcode = bool(b0 & 0x80), b0 & 0x70, b0 & 0x0F
        length, at = b1 & 0x7F, 2
        if length == 126:
            length, at = int.from_bytes(head[2:4], "big"), 4
        elif length == 127:
            length, at = int.from_bytes(head[2:10], "big"), 10
        self._mask = bytes(head[at : at + 4])
        self._head = bytearray()
        self._need = 2
        if not b1 & 0x80:  # clients must mask every frame
            self.lost = True
            return None
        if opcode >= 0x8:
            if opcode > 0xA or not fin or length > 125 or rsv:
                self.lost = True
                return None
            self._control = True
            self.peer_closed = self.peer_closed or opcode == 0x8
        elif opcode == 0x0:
            if not self._message or rsv:
                self.lost = True
                return None
            self._control = False
        elif opcode in (0x1, 0x2):
            if self._message or rsv & 0x30 or (rsv & 0x40 and not self.deflate):
                self.lost = True
                return None
            self._control = False
            self._message = True
            self._message_bytes = 0
            self._compressed = bool(rsv & 0x40)
            text = opcode == 0x1 and not self._compressed
            self._decoder = _utf8_decoder() if text else None
        else:
            self.lost = True
            return None
        self._fin, self._left, self._pos = fin, length, 0
        self._in_payload = length > 0
        if not self._control:
            self._message_bytes += length
            # A compressed message may be a little longer than what it inflates to.
            slack = self.max_message // 64 + 1024 if self._compressed else 0
            if self._message_bytes > self.max_message + slack:
                return Violation(
                    CLOSE_TOO_BIG,
                    f"message of at least {self._message_bytes} bytes "
                    f"exceeds the limit of {self.max_message}",
                    "oversize",
                    0,
                )
        return None

    def _end_frame(self) -> Violation | None:
        if self._control:
            self._control = False
            return None
        if self._fin:
            decoder, self._decoder = self._decoder, None
            self._message = False
            self._compressed = False
            if decoder is not None:
                try:
                    decoder.decode(b"", True)
                except UnicodeDecodeError:
                    return _NOT_UTF8
        return None


_NOT_UTF8 = Violation(CLOSE_INVALID_DATA, "text message is not valid UTF-8", "bad_frame", 0)


def _header_length(first_two: bytearray) -> int:
    b1 = first_two[1]
    length = b1 & 0x7F
    extended = 2 if length == 126 else 8 if length == 127 else 0
    return 2 + extended + (4 if b1 & 0x80 else 0)
