"""Outbound audio cut into the 20 ms frames Twilio plays.

Kept apart from the message builders: framing is about audio (a carry between
TTS chunks, mu-law silence padding), not about the wire format.
"""

from __future__ import annotations

from .. import mulaw
from .wire import FRAME_BYTES


def frame_audio(
    ulaw: bytes, frame_bytes: int = FRAME_BYTES, carry: bytes = b""
) -> tuple[list[bytes], bytes]:
    """Cut ``carry + ulaw`` into whole frames; return them and the new carry.

    TTS chunks rarely end on a 20 ms boundary; keeping the remainder for the next
    call means every frame we send, and pace, is exactly one frame long.
    """
    if frame_bytes <= 0:
        raise ValueError(f"frame_bytes must be positive, got {frame_bytes}")
    data = carry + ulaw
    whole = len(data) - len(data) % frame_bytes
    frames = [data[i : i + frame_bytes] for i in range(0, whole, frame_bytes)]
    return frames, data[whole:]


def pad_frame(carry: bytes, frame_bytes: int = FRAME_BYTES) -> bytes:
    """The last partial frame padded with mu-law silence (empty stays empty)."""
    return carry + mulaw.silence(-len(carry) % frame_bytes)
