"""The phone path's 8 -> 16 kHz half-band interpolator: exact, aligned, chunk-proof."""

from __future__ import annotations

import time

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from vantum.audio.resample import StreamResampler, Upsampler2x, open_resampler
from vantum.protocol import mulaw

PCM = st.lists(st.integers(-32768, 32767), min_size=0, max_size=700)


def _pcm(values: list[int]) -> bytes:
    return np.array(values, dtype="<i2").tobytes()


def _samples(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2").astype(np.int64)


def _whole(pcm: bytes) -> bytes:
    up = Upsampler2x(8000)
    return up.process(pcm) + up.flush()


@given(PCM)
def test_output_is_twice_as_long_and_keeps_every_input_sample(values: list[int]) -> None:
    out = _samples(_whole(_pcm(values)))
    assert len(out) == 2 * len(values)
    assert out[0::2].tolist() == values  # aligned: no delay, even samples untouched


@given(PCM, st.lists(st.integers(0, 200), max_size=12))
def test_any_chunking_gives_the_same_stream(values: list[int], cuts: list[int]) -> None:
    pcm = _pcm(values)
    up = Upsampler2x(8000)
    pieces, at = [], 0
    for cut in cuts:
        pieces.append(up.process(pcm[2 * at : 2 * (at + cut)]))
        at = min(len(values), at + cut)
    pieces.append(up.process(pcm[2 * at :]))
    pieces.append(up.flush())
    assert b"".join(pieces) == _whole(pcm)


@given(st.lists(st.binary(min_size=1, max_size=320), min_size=1, max_size=8))
@settings(max_examples=50)
def test_mulaw_frames_to_16k_are_the_decoded_line_audio(frames: list[bytes]) -> None:
    """A phone call's inbound path: each mu-law frame decoded then upsampled; the
    frames' decoded samples come out untouched, in order, wherever the frames split."""
    up = open_resampler(8000, 16_000)
    assert isinstance(up, Upsampler2x)
    out = b"".join(up.process(mulaw.decode(f)) for f in frames) + up.flush()
    assert _samples(out)[0::2].tolist() == _samples(mulaw.decode(b"".join(frames))).tolist()


def test_a_tone_is_interpolated_like_the_sinc_resampler_and_the_image_is_gone() -> None:
    rate, n = 8000, 8000
    t = np.arange(n) / rate
    tone = _pcm(np.rint(10_000 * np.sin(2 * np.pi * 1000 * t)).astype(int).tolist())
    out = _samples(_whole(tone)).astype(np.float64)
    ideal = 10_000 * np.sin(2 * np.pi * 1000 * np.arange(2 * n) / (2 * rate))
    middle = slice(100, -100)
    error = out[middle] - ideal[middle]
    snr_db = 10 * np.log10(np.mean(ideal[middle] ** 2) / np.mean(error**2))
    assert snr_db > 60
    # The 7 kHz image of the 1 kHz tone (what zero-stuffing alone would leave).
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    freqs = np.fft.rfftfreq(len(out), 1 / (2 * rate))
    image = spectrum[np.argmin(np.abs(freqs - 7000))]
    assert 20 * np.log10(image / spectrum.max()) < -60


def test_other_ratios_still_go_through_libsamplerate() -> None:
    assert isinstance(open_resampler(16_000, 16_000), StreamResampler)
    assert isinstance(open_resampler(48_000, 16_000), StreamResampler)
    assert isinstance(open_resampler(8000, 16_000), Upsampler2x)


def test_a_phone_frame_costs_far_less_than_libsamplerate() -> None:
    frame = mulaw.decode(bytes(range(160)))
    fast, slow = Upsampler2x(8000), StreamResampler(8000, 16_000)

    def per_frame(run: StreamResampler | Upsampler2x) -> float:
        best = float("inf")
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(200):
                run.process(frame)
            best = min(best, (time.perf_counter() - t0) / 200)
        return best

    assert per_frame(fast) < 0.7 * per_frame(slow)
