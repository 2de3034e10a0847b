"""Whisper-style log-mel features, in numpy, for the Smart Turn end-of-turn model.

Smart Turn v3 (``vantum/audio/smart_turn.py``) takes the 80 x 800 log-mel
spectrogram Whisper's feature extractor makes of 8 s of 16 kHz audio. That
extractor lives in ``transformers`` (hundreds of MB with its dependencies) for
~30 lines of arithmetic, so it is written out here instead: the same maths as
``transformers.WhisperFeatureExtractor(chunk_length=8)`` with ``do_normalize``
(Apache-2.0), as pipecat also vendors it (``pipecat/audio/turn/smart_turn/
_whisper_features.py``, BSD-2); ``tests/test_semantic_turn.py`` checks the two
agree when pipecat-ai is installed. Pure: no I/O, no state.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

RATE = 16_000
SECONDS = 8
SAMPLES = RATE * SECONDS
N_FFT = 400
HOP = 160
N_MELS = 80


def _hz_to_mel(freq: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mels = 3.0 * freq / 200.0
    high = freq >= 1000.0
    mels[high] = 15.0 + np.log(freq[high] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hz(mels: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    freq = 200.0 * mels / 3.0
    high = mels >= 15.0
    freq[high] = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mels[high] - 15.0))
    return freq


def _mel_filters() -> npt.NDArray[np.float64]:
    """Slaney-normalised triangular filters, shape (N_FFT // 2 + 1, N_MELS)."""
    edges = np.array([0.0, RATE / 2.0])
    lo, hi = _hz_to_mel(edges.copy())
    filter_freqs = _mel_to_hz(np.linspace(lo, hi, N_MELS + 2))
    fft_freqs = np.linspace(0, RATE // 2, N_FFT // 2 + 1)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]
    diff = np.diff(filter_freqs)
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (filter_freqs[2 : N_MELS + 2] - filter_freqs[:N_MELS]))[None, :]
    return filters


_FILTERS_T = _mel_filters().T
_WINDOW = np.hanning(N_FFT + 1)[:-1]  # periodic Hann, as torch.hann_window


def last_seconds(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The model's input window: the last 8 s, zero-padded at the *front* when
    shorter (the end of the audio, where the turn may end, stays at the end)."""
    if audio.size >= SAMPLES:
        return audio[-SAMPLES:]
    return np.pad(audio, (SAMPLES - audio.size, 0))


def log_mel(audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(80, 800) float32 features of exactly 8 s of 16 kHz audio in [-1, 1]."""
    if audio.shape != (SAMPLES,):
        raise ValueError(f"expected {SAMPLES} samples, got shape {audio.shape}")
    x = audio.astype(np.float32)
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    pad = N_FFT // 2
    padded = np.pad(x.astype(np.float64), (pad, pad), mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    power = np.abs(np.fft.rfft(frames * _WINDOW, axis=-1)) ** 2  # (frames, bins)
    mel = np.maximum(1e-10, _FILTERS_T @ power.T)
    spec: npt.NDArray[np.float64] = np.log10(mel)[:, :-1]
    spec = np.maximum(spec, spec.max() - 8.0)
    out: npt.NDArray[np.float32] = ((spec + 4.0) / 4.0).astype(np.float32)
    return out
