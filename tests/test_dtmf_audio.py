"""In-band DTMF: the tones a receiver decodes, also after G.711 (what Twilio carries)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vantum.audio.dtmf import COLUMNS, ROWS, dtmf_audio
from vantum.protocol import alaw, mulaw

KEYPAD = "0123456789*#ABCD"


def goertzel(samples: np.ndarray, freq: float, rate: int) -> float:
    coeff = 2 * np.cos(2 * np.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return float(s1 * s1 + s2 * s2 - coeff * s1 * s2)


def decode(pcm: bytes, rate: int, tone_ms: int = 100, gap_ms: int = 100) -> str:
    """A minimal receiver: the strongest row and column of each tone slot."""
    samples = np.frombuffer(pcm, "<i2").astype(float)
    tone, slot = rate * tone_ms // 1000, rate * (tone_ms + gap_ms) // 1000
    keys = []
    for start in range(0, len(samples) - tone + 1, slot):
        chunk = samples[start : start + tone]
        row = int(np.argmax([goertzel(chunk, f, rate) for f in ROWS]))
        col = int(np.argmax([goertzel(chunk, f, rate) for f in COLUMNS]))
        keys.append(["123A", "456B", "789C", "*0#D"][row][col])
    return "".join(keys)


@given(st.text(alphabet=KEYPAD, min_size=1, max_size=6), st.sampled_from(["pcm", "ulaw", "alaw"]))
def test_tones_decode_back_to_the_digits(digits: str, codec: str) -> None:
    pcm = dtmf_audio(digits)
    if codec == "ulaw":
        pcm = mulaw.decode(mulaw.encode(pcm))
    elif codec == "alaw":
        pcm = alaw.decode(alaw.encode(pcm))
    assert decode(pcm, 8000) == digits
    assert len(pcm) == len(digits) * 2 * 8000 * 200 // 1000


def test_pauses_and_bad_keys() -> None:
    assert len(dtmf_audio("w")) == 2 * 4000  # 0.5 s of silence
    assert not any(dtmf_audio("w"))
    assert decode(dtmf_audio("9", 16000), 16000) == "9"
    with pytest.raises(ValueError, match="not a DTMF key"):
        dtmf_audio("5x")
    with pytest.raises(ValueError):
        dtmf_audio("1", tone_ms=10)
