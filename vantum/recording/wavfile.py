"""A stereo PCM16 WAV written as the call goes, readable at every moment.

The 44-byte header's two sizes are rewritten after every append, so a process
that dies leaves a valid file holding everything up to its last append (a torn
last append leaves bytes past the declared data size, which readers ignore).
``repair`` rewrites the sizes from the file's length, for a file whose header
write itself was torn (docs/integration.md). Blocking: run it in a thread.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

HEADER_BYTES = 44
CHANNELS = 2
SAMPLE_BYTES = 2


def header(rate: int, data_bytes: int) -> bytes:
    block = CHANNELS * SAMPLE_BYTES
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, CHANNELS, rate, rate * block, block, 8 * SAMPLE_BYTES)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class WavAppender:
    """Open ``path`` (created, truncated) and append interleaved stereo frames."""

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.data_bytes = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        os.write(self._fd, header(rate, 0))

    def append(self, frames: bytes) -> None:
        if not frames:
            return
        os.pwrite(self._fd, frames, HEADER_BYTES + self.data_bytes)
        self.data_bytes += len(frames)
        os.pwrite(self._fd, struct.pack("<I", 36 + self.data_bytes), 4)
        os.pwrite(self._fd, struct.pack("<I", self.data_bytes), 40)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def repair(path: Path) -> int:
    """Make the header's sizes match the file (whole frames); returns the data bytes."""
    size = path.stat().st_size
    block = CHANNELS * SAMPLE_BYTES
    data = max(0, size - HEADER_BYTES) // block * block
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", 36 + data))
        f.seek(40)
        f.write(struct.pack("<I", data))
        f.truncate(HEADER_BYTES + data)
    return data
