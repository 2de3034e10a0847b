"""DTMF tones as audio, for pressing keys in band on a media stream (sans-I/O).

Twilio's bidirectional ``<Connect><Stream>`` has no message for DTMF, and a call
update with ``<Play digits>`` replaces the TwiML and so ends the stream
(docs/telephony.md, "DTMF out"). What keeps the stream is sending the tones as
audio: each key is the sum of one low (row) and one high (column) sine, ITU-T Q.23,
for ``tone_ms`` followed by ``gap_ms`` of silence; ``w`` is a 0.5 s pause, as in
Twilio's ``digits``. A ``send_dtmf`` tool can hand the result to the player like
any answer audio.
"""

from __future__ import annotations

import numpy as np

ROWS = (697.0, 770.0, 852.0, 941.0)
COLUMNS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYS = ("123A", "456B", "789C", "*0#D")
PAUSE_MS = 500


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
        if key.lower() == "w":
            parts.append(np.zeros(rate * PAUSE_MS // 1000))
            continue
        low, high = key_frequencies(key)
        parts.append(
            amplitude * (np.sin(2 * np.pi * low * tone_t) + np.sin(2 * np.pi * high * tone_t))
        )
        parts.append(gap)
    if not parts:
        return b""
    return np.round(np.concatenate(parts)).astype("<i2").tobytes()
