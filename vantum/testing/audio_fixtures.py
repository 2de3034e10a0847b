"""Synthetic audio for tests: "speech" that any energy VAD hears, and silence.

Real recordings make tests slow to load and hard to reason about; what the fakes
and the VADs need is audio whose loudness is known. ``speech_like`` is a voiced
tone (harmonics of a ~120-220 Hz pitch) modulated at a syllable rate, mixed with
noise, normalised to ``level_dbfs`` (RMS); its envelope never drops far enough to
look like a pause. ``silence`` is digital zeros or a very low noise floor.

All helpers return PCM16LE mono bytes at ``rate`` Hz.
"""

from __future__ import annotations

import numpy as np


def _to_pcm(samples: np.ndarray) -> bytes:
    clipped = np.clip(np.round(samples * 32767.0), -32768, 32767)
    return clipped.astype("<i2").tobytes()


def speech_like(
    duration_s: float, rate: int = 16_000, *, level_dbfs: float = -10.0, seed: int | None = None
) -> bytes:
    """Speech-like audio; ``seed=None`` gives different audio on every call."""
    rng = np.random.default_rng(seed)
    n = round(duration_s * rate)
    t = np.arange(n) / rate
    pitch = rng.uniform(120.0, 220.0)
    voiced = sum(
        np.sin(2 * np.pi * pitch * k * t + rng.uniform(0, 2 * np.pi)) / k for k in (1, 2, 3)
    )
    syllables = 0.65 + 0.35 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t)
    signal = voiced * syllables + 0.3 * rng.standard_normal(n)
    rms = float(np.sqrt(np.mean(signal**2))) if n else 1.0
    target = 10.0 ** (level_dbfs / 20.0)
    return _to_pcm(signal * (target / rms))


def silence(duration_s: float, rate: int = 16_000, *, level_dbfs: float | None = None) -> bytes:
    """Zeros, or Gaussian noise at ``level_dbfs`` RMS (e.g. -70) for a realistic floor."""
    n = round(duration_s * rate)
    if level_dbfs is None:
        return bytes(2 * n)
    noise = np.random.default_rng().standard_normal(n) * 10.0 ** (level_dbfs / 20.0)
    return _to_pcm(noise)


def rms_dbfs(pcm: bytes) -> float:
    """RMS level of PCM16LE in dBFS (-inf for digital silence)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64) / 32768.0
    if samples.size == 0:
        return float("-inf")
    rms = float(np.sqrt(np.mean(samples**2)))
    return 20.0 * float(np.log10(rms)) if rms > 0 else float("-inf")


def chunks(pcm: bytes, chunk_s: float = 0.02, rate: int = 16_000) -> list[bytes]:
    """Split PCM into the fixed-size pieces a real client would stream."""
    size = 2 * round(chunk_s * rate)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]
