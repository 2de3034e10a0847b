"""The fake carriers' DTMF receiver: generator -> G.711 -> detector gives the keys back,
however the audio is chunked and wherever the blocks fall; speech and silence press
nothing; its fast powers are Goertzel's."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.audio.dtmf import dtmf_audio, parse_digits
from vantum.protocol import alaw, mulaw
from vantum.testing.audio_fixtures import speech_like
from vantum.testing.dtmf_detect import COLUMNS, ROWS, DtmfDetector, detect_dtmf, goertzel_power
from vantum.testing.fake_cartesia import render_pcm

KEYPAD = "0123456789*#ABCD"


def codec_round_trip(pcm: bytes, codec: str) -> bytes:
    if codec == "ulaw":
        return mulaw.decode(mulaw.encode(pcm))
    if codec == "alaw":
        return alaw.decode(alaw.encode(pcm))
    return pcm


@settings(max_examples=60, deadline=None)
@given(
    digits=st.text(alphabet=KEYPAD + "wW", min_size=1, max_size=8).filter(
        lambda d: any(c in KEYPAD for c in d)
    ),
    codec=st.sampled_from(["pcm", "ulaw", "alaw"]),
    tone_ms=st.integers(60, 250),
    gap_ms=st.integers(60, 250),
    level=st.floats(-30.0, -3.0),
    lead_samples=st.integers(0, 400),
    cuts=st.lists(st.integers(1, 700), max_size=40),
)
def test_generated_tones_come_back_through_the_codec_in_any_chunking(
    digits: str,
    codec: str,
    tone_ms: int,
    gap_ms: int,
    level: float,
    lead_samples: int,
    cuts: list[int],
) -> None:
    pcm = bytes(2 * lead_samples) + dtmf_audio(
        digits, tone_ms=tone_ms, gap_ms=gap_ms, level_dbfs=level
    )
    pcm = codec_round_trip(pcm, codec)
    detector = DtmfDetector(8000)
    at = 0
    for size in cuts:  # the carrier's frames: any sizes, odd bytes included
        detector.feed(pcm[at : at + size])
        at += size
    detector.feed(pcm[at:])
    assert detector.digits == digits.replace("w", "").replace("W", "")


@settings(max_examples=20, deadline=None)
@given(st.text(alphabet=KEYPAD, min_size=1, max_size=5), st.sampled_from([16000, 24000]))
def test_other_rates(digits: str, rate: int) -> None:
    assert detect_dtmf(dtmf_audio(digits, rate), rate) == digits


def test_speech_and_silence_press_nothing() -> None:
    words = "Hello there, this is the front desk. Let me look that up for you. " * 4
    assert detect_dtmf(render_pcm(words, 8000)) == ""  # the fake TTS's voiced tones
    assert detect_dtmf(mulaw.decode(mulaw.encode(speech_like(10.0, 8000)))) == ""
    assert detect_dtmf(bytes(16000)) == ""


def test_one_long_tone_is_one_press_and_a_repeat_needs_a_gap() -> None:
    assert detect_dtmf(dtmf_audio("5", tone_ms=1000)) == "5"
    assert detect_dtmf(dtmf_audio("55")) == "55"
    pcm = dtmf_audio("5", tone_ms=300)
    glued = pcm[: 2 * 2400] + pcm[: 2 * 2400]  # two tones with no gap: one long press
    assert detect_dtmf(glued) == "5"


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(-32768, 32767), min_size=205, max_size=205))
def test_block_powers_are_goertzels(samples: list[int]) -> None:
    block = np.array(samples, dtype=np.float64)
    expected = [goertzel_power(block, f, 8000) for f in ROWS + COLUMNS]
    np.testing.assert_allclose(DtmfDetector(8000).powers(block), expected, rtol=1e-6, atol=1e-3)


def test_parse_digits() -> None:
    assert parse_digits("1-800 55,5a#") == "180055w5A#"
    assert parse_digits("1wW2") == "1wW2"
    for bad, why in [("12x", "'x' is not a DTMF key"), ("ww", "no key"), ("", "no key")]:
        with pytest.raises(ValueError, match=why):
            parse_digits(bad)
    with pytest.raises(ValueError, match="at most 64"):
        parse_digits("1" * 65)
    assert len(dtmf_audio("W")) == 2 * 8000  # 1 s
