"""Voice activity detection on the 16 kHz stream.

The classifier is WebRTC's VAD (``webrtcvad-wheels``): about 4 µs of CPU per 20 ms
frame here, no model download, no torch. Silero's ONNX model is more accurate on
noisy audio but needs onnxruntime plus a model file from a hub; at our sizes the
WebRTC VAD, smoothed by :class:`VadSegmenter`, is enough to find turn ends, and
the STT's own endpointing backs it up.

``VadSegmenter`` is pure: it turns per-frame speech/non-speech decisions into
start/end events with hysteresis, so short clicks don't start speech and short
pauses don't end it.
"""

from __future__ import annotations

import attrs

FRAME_MS = 20
RATE = 16_000
FRAME_BYTES = RATE * FRAME_MS // 1000 * 2


@attrs.frozen
class VoiceStarted:
    """Speech began ``at`` seconds into the stream (the first speech frame)."""

    at: float


@attrs.frozen
class VoiceEnded:
    """Speech ended: the last speech frame ended at ``at`` (the silence then lasted
    ``silence_ms``, which is when this event is emitted)."""

    at: float
    speech_ms: int


VadEvent = VoiceStarted | VoiceEnded


@attrs.define
class VadSegmenter:
    start_ms: int = 60
    """Speech must last this long (consecutive frames, small gaps allowed) to count."""
    silence_ms: int = 500
    """Non-speech this long after speech ends the segment (the turn's end-of-speech)."""

    in_speech: bool = False
    _run_ms: int = 0
    _gap_ms: int = 0
    _speech_start: float = 0.0
    _last_speech_end: float = 0.0
    _t: float = 0.0

    def feed(self, is_speech: bool) -> list[VadEvent]:
        """Advance one 20 ms frame."""
        start = self._t
        self._t += FRAME_MS / 1000
        events: list[VadEvent] = []
        if not self.in_speech:
            if is_speech:
                if self._run_ms == 0:
                    self._speech_start = start
                self._run_ms += FRAME_MS
                self._gap_ms = 0
                if self._run_ms >= self.start_ms:
                    self.in_speech = True
                    self._last_speech_end = self._t
                    events.append(VoiceStarted(self._speech_start))
            else:
                self._gap_ms += FRAME_MS
                if self._gap_ms > FRAME_MS:  # tolerate a single dropped frame
                    self._run_ms = 0
            return events
        if is_speech:
            self._gap_ms = 0
            self._last_speech_end = self._t
        else:
            self._gap_ms += FRAME_MS
            if self._gap_ms >= self.silence_ms:
                self.in_speech = False
                self._run_ms = 0
                speech_ms = round((self._last_speech_end - self._speech_start) * 1000)
                events.append(VoiceEnded(self._last_speech_end, speech_ms))
        return events

    @property
    def speech_ms(self) -> int:
        """Length of the current speech segment so far (0 when not in speech)."""
        if not self.in_speech:
            return 0
        return round((self._last_speech_end - self._speech_start) * 1000)


class WebRtcClassifier:
    """Frame classifier; mode 0 (permissive) .. 3 (aggressive about calling it noise)."""

    HANGOVER_MS = 100
    """WebRTC's VAD keeps calling frames speech for a while after speech stops, so a
    segment measures longer than what was said: measured on ``speech_like`` bursts of
    40..500 ms (8 seeds each), +100..120 ms. Durations that must mean something (the
    barge-in guard) subtract this."""

    def __init__(self, mode: int = 3) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(mode)
        self._carry = b""

    def frames(self, pcm: bytes) -> list[bool]:
        data = self._carry + pcm
        n = len(data) // FRAME_BYTES
        self._carry = data[n * FRAME_BYTES :]
        return [
            bool(self._vad.is_speech(data[i * FRAME_BYTES : (i + 1) * FRAME_BYTES], RATE))
            for i in range(n)
        ]
