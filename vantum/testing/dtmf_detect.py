"""A DTMF receiver for the fake carriers: which keys does this audio press? (sans-I/O)

The fake Twilio line (and the fake Telnyx line, which shares its playback) feeds it
what the caller *heard*, so a test can prove that ``send_dtmf`` reached the far end
as tones an IVR would decode, not merely that some audio was sent.

It works like a hardware receiver: the audio is looked at in blocks of 25.6 ms
(205 samples at 8 kHz, the classic block size whose frequency resolution separates
the eight DTMF frequencies), one every 12.8 ms (half-overlapping, so a tone of
60 ms always fills two consecutive blocks wherever it starts), and in each block
the Goertzel algorithm measures the power at the four row and four column
frequencies (ITU-T Q.23). A block holds a key
when one row and one column carry most of the block's energy (so speech, whose
energy is spread over harmonics, and silence are not keys), the two are within
8 dB of each other (twist) and each beats the other rows/columns by 8 dB. A key is
reported after two such blocks in a row (38.4 ms of tone) and again only after a
block without it, so one long tone is one press and ``11`` needs a gap between
the two tones. Tones and gaps of 60 ms or more are always read right (the tests
check 60-250 ms; ``send_dtmf`` sends 100 ms tones with 100 ms gaps).

Blocks are cut from the stream as it arrives, whatever the chunking, so feeding
the same audio in any pieces gives the same keys.
"""

from __future__ import annotations

import numpy as np

# The Q.23 table again rather than vantum.audio.dtmf's: the receiver checks the
# generator, so it must not share a mistake with it.
ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
BLOCK_S = 205 / 8000

MIN_RMS = 32768 * 10 ** (-45 / 20)
"""Quieter blocks are silence (-45 dBFS; our tones are sent at -9 dBFS)."""
MIN_TONE_SHARE = 0.7
"""The row and column tones must carry this share of the block's energy."""
MAX_TWIST = 10 ** (8 / 10)
"""Row and column power may differ by at most 8 dB."""
MIN_DOMINANCE = 10 ** (8 / 10)
"""The strongest row (column) beats every other row (column) by 8 dB."""
BLOCKS_TO_ACCEPT = 2


class DtmfDetector:
    """Feed PCM16LE mono at ``rate``; ``digits`` is every key pressed so far."""

    def __init__(self, rate: int = 8000) -> None:
        self.rate = rate
        self.block = round(rate * BLOCK_S)
        self.hop = self.block // 2
        self._freqs = np.array(ROWS + COLUMNS)
        n = np.arange(self.block)
        self._basis = np.exp(-2j * np.pi * np.outer(self._freqs, n) / rate)
        self._pending = np.empty(0)
        self._odd = b""
        self._key: str | None = None
        self._run = 0
        self.digits = ""
        self.at: list[int] = []
        """For each of ``digits``, the sample where its tone was accepted."""
        self._offset = 0  # samples before ``_pending``

    def feed(self, pcm16: bytes) -> str:
        """Add audio; returns the keys it completed (often none)."""
        data = self._odd + bytes(pcm16)
        whole = len(data) // 2 * 2
        self._odd = data[whole:]  # half a sample: the rest comes with the next piece
        samples = np.frombuffer(data[:whole], "<i2").astype(np.float64)
        self._pending = np.concatenate([self._pending, samples])
        found = ""
        while len(self._pending) >= self.block:
            block, self._pending = self._pending[: self.block], self._pending[self.hop :]
            start, self._offset = self._offset, self._offset + self.hop
            key = self.classify(block)
            if key is not None and key == self._key:
                self._run += 1
            else:
                self._key, self._run = key, 1
            if key is not None and self._run == BLOCKS_TO_ACCEPT:
                found += key
                self.at.append(start + self.block)
        self.digits += found
        return found

    def powers(self, block: np.ndarray) -> np.ndarray:
        """Goertzel power at the 4 row then 4 column frequencies.

        Goertzel's recurrence computes one DFT term, ``|sum x[n] e^(-j w n)|^2``; here
        all eight come from one product with precomputed exponentials, which is the
        same number (:func:`goertzel_power` is the recurrence; the tests compare them)
        at a hundredth of the cost of a per-sample Python loop, so every fake call
        can listen for keys without weighing on load tests."""
        return np.asarray(np.abs(self._basis @ block) ** 2)

    def classify(self, block: np.ndarray) -> str | None:
        """The key one block (``self.block`` samples) holds, or None."""
        n = len(block)
        energy = float(np.dot(block, block))
        if energy < n * MIN_RMS * MIN_RMS:
            return None
        # A sine of amplitude a gives Goertzel power (a n / 2)^2 and energy n a^2 / 2.
        share = self.powers(block) * 2.0 / (n * energy)
        rows, cols = share[:4], share[4:]
        r, c = int(np.argmax(rows)), int(np.argmax(cols))
        if rows[r] + cols[c] < MIN_TONE_SHARE:
            return None
        if max(rows[r], cols[c]) > MAX_TWIST * min(rows[r], cols[c]):
            return None
        if (np.delete(rows, r) * MIN_DOMINANCE > rows[r]).any():
            return None
        if (np.delete(cols, c) * MIN_DOMINANCE > cols[c]).any():
            return None
        return KEYS[r][c]


def goertzel_power(samples: np.ndarray, freq: float, rate: int) -> float:
    """The Goertzel recurrence for one frequency (the reference for :meth:`powers`)."""
    coeff = 2.0 * np.cos(2.0 * np.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = float(x) + coeff * s1 - s2, s1
    return float(s1 * s1 + s2 * s2 - coeff * s1 * s2)


def detect_dtmf(pcm16: bytes, rate: int = 8000) -> str:
    """The keys pressed in a whole recording."""
    return DtmfDetector(rate).feed(pcm16)


__all__ = ["DtmfDetector", "detect_dtmf", "goertzel_power"]
