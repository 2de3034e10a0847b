"""G.711 mu-law: spec vectors, exhaustive error bounds, an independent reference, speed."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantum.protocol import mulaw

ALL_PCM = np.arange(-32768, 32768, dtype="<i2")
ALL_CODES = bytes(range(256))


def _pcm(values: list[int]) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def _segment(codes: np.ndarray) -> np.ndarray:
    return ((~codes.astype(np.int64)) >> 4) & 0x07


def test_decode_matches_g711_vectors() -> None:
    decoded = _samples(mulaw.decode(bytes([0x00, 0x80, 0xFF, 0x7F, 0x01, 0x0F, 0x70, 0x7E, 0xFE])))
    assert decoded.tolist() == [-32124, 32124, 0, 0, -31100, -16764, -120, -8, 8]


def test_encode_matches_g711_vectors() -> None:
    encoded = mulaw.encode(_pcm([0, -1, 32767, -32768, 32124, -32124, 8, -8, 1, -2]))
    assert list(encoded) == [0xFF, 0x7F, 0x80, 0x00, 0x80, 0x00, 0xFE, 0x7E, 0xFF, 0x7F]


def test_decode_table_steps_by_segment() -> None:
    # Within each segment the 16 levels are evenly spaced by 8 << segment.
    positive = _samples(mulaw.decode(bytes(range(0xFF, 0x7F, -1))))
    for seg in range(8):
        levels = positive[seg * 16 : seg * 16 + 16]
        assert np.all(np.diff(levels) == 8 << seg)


def test_every_sample_roundtrips_within_half_a_step() -> None:
    codes = np.frombuffer(mulaw.encode(ALL_PCM.tobytes()), dtype=np.uint8)
    decoded = _samples(mulaw.decode(codes.tobytes()))
    error = np.abs(decoded - ALL_PCM.astype(np.int64))
    in_range = np.abs(ALL_PCM.astype(np.int64)) <= mulaw.CLIP
    half_step = 4 << _segment(codes)
    assert np.all(error[in_range] <= half_step[in_range])
    assert np.all(np.abs(decoded[~in_range]) == 32124)
    # The quantiser is monotonic: louder input never decodes quieter.
    assert np.all(np.diff(decoded) >= 0)


def test_negative_samples_mirror_positive_ones() -> None:
    # ITU one's-complement rule: x and -1 - x differ only in the sign bit.
    positive = np.arange(0, 32768, dtype="<i2")
    negative = (-1 - positive.astype(np.int32)).astype("<i2")
    pos_codes = np.frombuffer(mulaw.encode(positive.tobytes()), dtype=np.uint8)
    neg_codes = np.frombuffer(mulaw.encode(negative.tobytes()), dtype=np.uint8)
    assert np.all(pos_codes ^ 0x80 == neg_codes)


def test_every_code_survives_decode_then_encode() -> None:
    again = mulaw.encode(mulaw.decode(ALL_CODES))
    expected = bytearray(ALL_CODES)
    expected[0x7F] = 0xFF  # negative zero decodes to 0, which encodes as positive zero
    assert again == bytes(expected)


def test_agrees_with_stdlib_audioop_where_both_follow_the_standard() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    assert audioop.ulaw2lin(ALL_CODES, 2) == mulaw.decode(ALL_CODES)
    # audioop negates negative samples (Sun's variant) where G.191 complements them;
    # for non-negative samples both are the same quantiser.
    positive = np.arange(0, 32768, dtype="<i2").tobytes()
    assert audioop.lin2ulaw(positive, 2) == mulaw.encode(positive)


@given(st.lists(st.integers(-32768, 32767), max_size=400))
def test_random_audio_roundtrips_within_half_a_step(values: list[int]) -> None:
    pcm = _pcm(values)
    codes = np.frombuffer(mulaw.encode(pcm), dtype=np.uint8)
    assert len(codes) == len(values)
    decoded = _samples(mulaw.decode(codes.tobytes()))
    original = np.array(values, dtype=np.int64)
    clipped = np.clip(original, -mulaw.CLIP, mulaw.CLIP)
    assert np.all(np.abs(decoded - clipped) <= 4 << _segment(codes))


@given(st.binary(max_size=400))
def test_random_codes_survive_decode_then_encode(codes: bytes) -> None:
    assert mulaw.encode(mulaw.decode(codes)) == codes.replace(b"\x7f", b"\xff")


def test_odd_length_pcm_is_refused() -> None:
    with pytest.raises(ValueError, match="even number"):
        mulaw.encode(b"\x00\x01\x02")


def test_silence_is_positive_zero() -> None:
    assert mulaw.silence(3) == b"\xff\xff\xff"
    assert mulaw.decode(mulaw.silence(160)) == bytes(320)


def test_throughput() -> None:
    """Ten minutes of 8 kHz audio; prints MB/s (run with -s to see it)."""
    rng = np.random.default_rng(7)
    pcm = rng.integers(-32768, 32768, 8000 * 600, dtype=np.int16).astype("<i2").tobytes()
    t0 = time.perf_counter()
    ulaw = mulaw.encode(pcm)
    t1 = time.perf_counter()
    back = mulaw.decode(ulaw)
    t2 = time.perf_counter()
    enc_mbs = len(pcm) / (t1 - t0) / 1e6
    dec_mbs = len(back) / (t2 - t1) / 1e6
    print(f"\nmu-law encode {enc_mbs:.0f} MB/s of PCM16 in, decode {dec_mbs:.0f} MB/s of PCM16 out")
    # One call is 16 kB/s of PCM16; even a slow CI box clears this by orders of magnitude.
    assert enc_mbs > 20
    assert dec_mbs > 20
