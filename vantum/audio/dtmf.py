"""DTMF tones as audio, for pressing keys in band on a media stream (sans-I/O).

Twilio's bidirectional ``<Connect><Stream>`` has no message for DTMF, and a call
update with ``<Play digits>`` replaces the TwiML and so ends the stream
(docs/telephony.md, "DTMF out"). What keeps the stream is sending the tones as
audio: each key is the sum of one low (row) and one high (column) sine, ITU-T Q.23,
for ``tone_ms`` followed by ``gap_ms`` of silence; ``w`` is a 0.5 s pause and
``W`` a 1 s one, as in Twilio's and Telnyx's ``digits``. The ``send_dtmf`` tool
hands the result to the answer's player like any answer audio.
"""

from __future__ import annotations

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
PAUSE_MS = 500
PAUSES_MS = {"w": PAUSE_MS, "W": 1000}
MAX_DIGITS = 64
"""A phone menu needs a few keys; a longer string is more likely a model's mistake."""


def parse_digits(digits: str) -> str:
    """``digits`` in the form the carriers take: keys ``0-9 * # A-D`` (``a-d`` too),
    pauses ``w`` (0.5 s) and ``W`` (1 s), ``,`` meaning ``w``; spaces and dashes
    (``"1-800 555"``) are dropped. Raises ValueError saying what is wrong."""
    out = []
    for char in digits:
        if char in " -":
            continue
        if char == ",":
            char = "w"
        elif char in "abcd":
            char = char.upper()
        if char not in PAUSES_MS and not any(char in row for row in KEYS):
            raise ValueError(
                f"{char!r} is not a DTMF key: use 0-9, *, #, A-D and w/W (or ,) for pauses"
            )
        out.append(char)
    if not any(char not in PAUSES_MS for char in out):
        raise ValueError("no key to press: give at least one of 0-9, *, #, A-D")
    if len(out) > MAX_DIGITS:
        raise ValueError(f"at most {MAX_DIGITS} keys and pauses at once")
    return "".join(out)


def duration_ms(digits: str, *, tone_ms: int = 100, gap_ms: int = 100) -> int:
    """How long :func:`dtmf_audio` of ``digits`` plays."""
    return sum(PAUSES_MS.get(key, tone_ms + gap_ms) for key in digits)


def key_frequencies(key: str) -> tuple[float, float]:
    """The (row, column) frequencies of a keypad key."""
    for row, keys in enumerate(KEYS):
        column = keys.find(key.upper())
        if column >= 0 and len(key) == 1:
            return ROWS[row], COLUMNS[column]
    raise ValueError(f"{key!r} is not a DTMF key (0-9, *, #, A-D)")


def dtmf_audio(
    digits: str,
    rate: int = 8000,
    *,
    tone_ms: int = 100,
    gap_ms: int = 100,
    level_dbfs: float = -9.0,
) -> bytes:
    """PCM16LE at ``rate`` playing ``digits`` (keys and ``w`` pauses)."""
    if not 40 <= tone_ms <= 1000 or not 40 <= gap_ms <= 1000:
        raise ValueError("tone_ms and gap_ms must be 40-1000 (receivers need >= 40 ms)")
    amplitude = 32767 * 10 ** (level_dbfs / 20) / 2  # two tones share the peak
    tone_t = np.arange(rate * tone_ms // 1000) / rate
    gap = np.zeros(rate * gap_ms // 1000)
    parts: list[np.ndarray] = []
    for key in digits:
        if key in PAUSES_MS:
            parts.append(np.zeros(rate * PAUSES_MS[key] // 1000))
            continue
        low, high = key_frequencies(key)
        parts.append(
            amplitude * (np.sin(2 * np.pi * low * tone_t) + np.sin(2 * np.pi * high * tone_t))
        )
        parts.append(gap)
    if not parts:
        return b""
    return np.round(np.concatenate(parts)).astype("<i2").tobytes()
