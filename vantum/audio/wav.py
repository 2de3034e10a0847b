"""Reading and writing mono PCM16 WAV files (stdlib ``wave`` plus channel mixing)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from ..errors import VantumError


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Return (PCM16LE mono bytes, sample rate); stereo is mixed down."""
    try:
        with wave.open(str(path), "rb") as w:
            width = w.getsampwidth()
            channels = w.getnchannels()
            rate = w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise VantumError(f"{path}: not a PCM WAV file ({exc})") from None
    if width != 2:
        raise VantumError(f"{path}: {8 * width}-bit samples; only 16-bit PCM is supported")
    if channels > 1:
        data = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).astype(np.int32)
        frames = data.mean(axis=1).astype("<i2").tobytes()
    return frames, rate


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
