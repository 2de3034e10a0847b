"""Streaming sample-rate conversion with one filter state per stream.

A fresh converter per chunk would restart the filter at every boundary and click;
keeping one state per direction of a call keeps the signal continuous across
chunks. Any ratio goes through libsamplerate (:class:`StreamResampler`); the one
ratio every phone call needs, 8 kHz in to the 16 kHz the STT and VAD take, has a
half-band interpolator in a few numpy calls (:class:`Upsampler2x`), because at 50
frames a second per caller libsamplerate's float round trip was ~42 µs a frame.
:func:`open_resampler` picks between them.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
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


def _halfband_phase(taps: int, beta: float) -> npt.NDArray[np.float32]:
    """The interpolating phase of a Kaiser-windowed half-band low-pass, ``taps`` long.

    The full filter has ``2 * taps - 1`` coefficients, half of them zero and the
    centre one 1 (at the interpolation gain of 2), so the other phase passes the
    input samples through untouched: only these ``taps`` are ever multiplied.
    """
    n = 2 * taps - 1
    k = np.arange(0, n, 2) - (n - 1) / 2  # the even taps, offsets from the centre
    phase = np.sinc(k / 2) * np.kaiser(n, beta)[::2]
    normalised: npt.NDArray[np.float32] = (phase / phase.sum()).astype(np.float32)
    return normalised  # exact DC gain


class Upsampler2x:
    """PCM16LE mono in at ``src_rate``, out at twice that rate, streaming.

    Output sample ``2j`` is input sample ``j`` exactly; ``2j + 1`` is interpolated by
    a 16-tap half-band phase (Kaiser, about 70 dB of image rejection: what is left
    above the input's Nyquist is below a telephone line's own noise floor). The
    filter's delay (``TAPS - 1`` input samples) is taken out: the first call holds
    back that many output samples and :meth:`flush` returns them, so the output is
    aligned with the input and exactly twice as long.
    """

    TAPS = 16
    _PHASE = _halfband_phase(TAPS, beta=8.0)
    _CLIP_LO = np.float32(-32768)
    _CLIP_HI = np.float32(32767)

    def __init__(self, src_rate: int) -> None:
        self.src_rate = src_rate
        self.dst_rate = 2 * src_rate
        self._history = np.zeros(self.TAPS - 1, dtype=np.float32)
        self._skip = 2 * (self.TAPS // 2) - 1  # output samples owed to the delay
        self._pending_skip = self._skip

    @property
    def passthrough(self) -> bool:
        return False

    def process(self, pcm: bytes) -> bytes:
        if not pcm:
            return b""
        return self._run(np.frombuffer(pcm, dtype="<i2"))

    def _run(self, x: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> bytes:
        # Every call here is a C ufunc on preallocated arrays: numpy's Python-level
        # wrappers (concatenate, convolve, clip) cost more than the arithmetic at 160
        # samples a frame.
        taps, n = self.TAPS, len(x)
        xx = np.empty(n + taps - 1, dtype=np.float32)
        xx[: taps - 1] = self._history
        xx[taps - 1 :] = x
        self._history = xx[n:]
        out = np.empty(2 * n, dtype=np.float32)
        # y[2n] = phase . x[n-taps+1 .. n] (symmetric: correlation is convolution);
        # y[2n+1] = x[n - taps/2 + 1], the input delayed, exact.
        even = out[0::2]
        even[:] = np.correlate(xx, self._PHASE)
        np.minimum(even, self._CLIP_HI, out=even)
        np.maximum(even, self._CLIP_LO, out=even)
        np.rint(even, out=even)
        out[1::2] = xx[taps // 2 : taps // 2 + n]
        pcm16 = out.astype("<i2")
        if self._pending_skip:
            skipped = min(self._pending_skip, len(pcm16))
            pcm16 = pcm16[skipped:]
            self._pending_skip -= skipped
        return pcm16.tobytes()

    def flush(self) -> bytes:
        """The delayed tail (end of a stream); the state is reset afterwards."""
        owed = self._skip - self._pending_skip
        tail = self._run(np.zeros(self.TAPS // 2, dtype=np.float32))[: 2 * owed]
        self._history[:] = 0
        self._pending_skip = self._skip
        return tail


def open_resampler(src_rate: int, dst_rate: int) -> StreamResampler | Upsampler2x:
    """The cheapest streaming converter for ``src_rate`` -> ``dst_rate``."""
    if dst_rate == 2 * src_rate:
        return Upsampler2x(src_rate)
    return StreamResampler(src_rate, dst_rate)
