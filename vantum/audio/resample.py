"""Streaming sample-rate conversion with one libsamplerate state per stream.

A fresh converter per chunk would restart the filter at every boundary and click;
keeping one ``samplerate.Resampler`` per direction of a call keeps the signal
continuous across chunks.
"""

from __future__ import annotations

import numpy as np
import samplerate

_SCALE_IN = np.float32(1 / 32768)
_SCALE_OUT = np.float32(32768.0)


def pcm16_to_float(pcm: bytes) -> np.ndarray:
    return np.frombuffer(pcm, dtype="<i2") * _SCALE_IN


def float_to_pcm16(samples: np.ndarray) -> bytes:
    # In place on one scratch array: these run per 20-40 ms chunk, so allocations count.
    scaled = samples * _SCALE_OUT
    np.clip(scaled, -32768, 32767, out=scaled)
    np.rint(scaled, out=scaled)
    return scaled.astype("<i2").tobytes()


class StreamResampler:
    """PCM16LE mono in at ``src_rate``, PCM16LE mono out at ``dst_rate``."""

    def __init__(self, src_rate: int, dst_rate: int, converter: str = "sinc_fastest") -> None:
        self.src_rate = src_rate
        self.dst_rate = dst_rate
        self.ratio = dst_rate / src_rate
        self._passthrough = src_rate == dst_rate
        self._state = None if self._passthrough else samplerate.Resampler(converter, channels=1)
        self._in_samples = 0
        self._out_samples = 0

    @property
    def passthrough(self) -> bool:
        return self._passthrough

    def process(self, pcm: bytes) -> bytes:
        if self._passthrough or not pcm:
            return pcm
        assert self._state is not None
        samples = pcm16_to_float(pcm)
        out = self._state.process(samples, self.ratio, end_of_input=False)
        self._in_samples += len(samples)
        self._out_samples += len(out)
        return float_to_pcm16(out)

    def flush(self) -> bytes:
        """Drain the filter's tail (end of a stream); the state is reset afterwards."""
        if self._passthrough or self._state is None:
            return b""
        # Push silence through the filter so its delay line empties, then keep only
        # as many samples as the stream's duration calls for.
        owed = round(self._in_samples * self.ratio) - self._out_samples
        pad = np.zeros(max(256, int(256 / self.ratio)), dtype=np.float32)
        out = self._state.process(pad, self.ratio, end_of_input=True)
        self._state.reset()
        self._in_samples = self._out_samples = 0
        return float_to_pcm16(out[: max(owed, 0)])
