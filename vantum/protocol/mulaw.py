"""G.711 mu-law, the only audio format Twilio media streams carry.

Both directions are one table lookup per sample so a phone call costs next to
nothing: decoding indexes a 256-entry table, encoding a 65536-entry table built
once at import from vector maths. The encoder follows the ITU-T G.191 reference
(``ulaw_compress``): negative samples use the one's complement magnitude, so
``x`` and ``-1 - x`` get mirrored codes and every sample inside the clip range
decodes to within half a quantisation step. (The classic Sun ``linear2ulaw``,
and so ``audioop.lin2ulaw``, negate instead and land up to 7 LSB off for small
negative values; decoding is identical in all of them.)
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

SILENCE = 0xFF
"""Code of digital silence (positive zero); pad partial frames with it."""

CLIP = 32635
"""Largest magnitude encoded without clipping; louder samples saturate at +-32124."""

_BIAS14 = 33  # 0x84 >> 2: the mu-law bias on the 14-bit magnitude scale.


def _build_decode_table() -> npt.NDArray[np.int16]:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    return np.where(codes & 0x80, -magnitude, magnitude).astype("<i2")


def _build_encode_table() -> npt.NDArray[np.uint8]:
    # Index i is the uint16 bit pattern of one PCM16 sample.
    pcm = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    negative = pcm < 0
    absno = np.where(negative, ~pcm, pcm) >> 2
    absno = np.minimum(absno + _BIAS14, 0x1FFF)
    # Segment = position of the highest set bit above bit 5 (0..7).
    segment = np.floor(np.log2(absno >> 5)).astype(np.int32)
    mantissa = (absno >> (segment + 1)) & 0x0F
    code = ~((segment << 4) | mantissa) & 0x7F
    table: npt.NDArray[np.uint8] = np.where(negative, code, code | 0x80).astype(np.uint8)
    return table


_DECODE = _build_decode_table()
_ENCODE = _build_encode_table()


def encode(pcm16: bytes) -> bytes:
    """PCM16LE samples to mu-law bytes, one byte per sample."""
    if len(pcm16) % 2:
        raise ValueError(f"PCM16 audio needs an even number of bytes, got {len(pcm16)}")
    return _ENCODE.take(np.frombuffer(pcm16, dtype="<u2")).tobytes()  # take: 2x fancy indexing


def decode(ulaw: bytes) -> bytes:
    """Mu-law bytes to PCM16LE samples."""
    return _DECODE.take(np.frombuffer(ulaw, dtype=np.uint8)).tobytes()


def silence(n_bytes: int) -> bytes:
    """``n_bytes`` of mu-law silence (``n_bytes`` samples)."""
    return bytes([SILENCE]) * n_bytes
