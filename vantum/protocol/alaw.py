"""G.711 A-law, the PCMA codec Telnyx (and most of the world outside North America) uses.

Like :mod:`vantum.protocol.mulaw`, both directions are one table lookup per sample:
the tables are built once at import from the ITU-T G.711 segment rules (the encoder
is the classic Sun ``linear2alaw`` on the 13-bit magnitude, which is exact for A-law:
unlike mu-law it has no bias to get wrong).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SILENCE = 0xD5
"""Code of digital silence (positive zero)."""

_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0,
        (mantissa << 4) + 8,
        ((mantissa << 4) + 0x108) << np.maximum(exponent - 1, 0),
    )
    return np.where(codes & 0x80, magnitude, -magnitude).astype("<i2")


def _build_encode_table() -> npt.NDArray[np.uint8]:
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32) >> 3
    negative = pcm < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -pcm - 1, pcm)
    segment = np.searchsorted(_SEGMENT_ENDS, magnitude)  # first end >= magnitude
    shift = np.where(segment < 2, 1, segment)
    code = (np.minimum(segment, 7) << 4) | ((magnitude >> shift) & 0x0F)
    code = np.where(segment >= 8, 0x7F, code)
    table: npt.NDArray[np.uint8] = (code ^ mask).astype(np.uint8)
    return table


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def encode(pcm16: bytes) -> bytes:
    """PCM16LE samples to A-law bytes, one byte per sample."""
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 audio needs an even number of bytes, got {len(pcm16)}")
    return _ENCODE.take(np.frombuffer(pcm16, dtype="<u2")).tobytes()


def decode(alaw: bytes) -> bytes:
    """A-law bytes to PCM16LE samples."""
    return _DECODE.take(np.frombuffer(alaw, dtype=np.uint8)).tobytes()
