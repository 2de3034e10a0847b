"""Embedded offline speech synthesis with hibari (Kokoro-82M distilled, int8 ONNX).

Why hibari: the ``hibari-tts`` wheel carries a 7.9 MB int8 ONNX voice (Kokoro-82M's
``af_heart``, distilled; Apache-2.0), its own grapheme-to-phoneme rules and
lexicons, and needs only numpy and onnxruntime. It sounds natural (UTMOS 4.43 by its
authors' measure, zero word errors from our recognisers) and runs ~100-200x faster
than real time on one thread, so the first audio of a sentence is ready in a few tens
of milliseconds. Only the default voice is in the wheel: the others download on
first use, so this module never asks for one (no network at run time).

One model per process (:class:`SharedHibari`), loaded once; synthesis runs in worker
threads (onnxruntime releases the GIL) one sentence at a time, through one
:class:`trio.CapacityLimiter`, and the audio goes out in ``chunk_ms`` pieces so a
barge-in cancels at the next piece. hibari reports no word timings, so
:func:`estimate_word_times` spreads each sentence's duration over its words by
length: barge-in history is then cut near the words the caller actually heard.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import numpy as np
import numpy.typing as npt
import trio

from ..errors import TTSError
from .base import TTSAudio, TTSEvent, WordTimestamps

log = logging.getLogger("vantum.providers.hibari_tts")

SAMPLE_RATE = 24_000
"""hibari's (Kokoro's) native rate; the player resamples to the caller's."""
VOICE = "heart"
"""The one voice inside the wheel (Kokoro ``af_heart``); any other downloads."""


def hibari_available() -> bool:
    return importlib.util.find_spec("hibari") is not None


class SharedHibari:
    """The process's hibari model: loaded once, used by one thread at a time."""

    def __init__(self, threads: int = 1) -> None:
        self._threads = threads
        self._lock = threading.Lock()
        self._tts: Any = None

    def _load(self) -> Any:
        if self._tts is None:
            try:
                from hibari import Hibari
                from hibari.voices import voice_path
            except ImportError as exc:
                raise TTSError(
                    "hibari-tts is not installed: pip install 'vantum[embedded]'"
                ) from exc
            try:
                # download_missing=False: the bundled voice, never a network fetch.
                path = voice_path(VOICE, download_missing=False)
                self._tts = Hibari(voice=VOICE, model=path, threads=self._threads)
            except (FileNotFoundError, RuntimeError, ValueError, OSError) as exc:
                raise TTSError(f"hibari could not load its voice: {exc}") from exc
        return self._tts

    def load(self) -> None:
        """Load the model and the phonemizer (blocking, ~0.5-1 s the first time)."""
        with self._lock:
            tts = self._load()
            tts.phonemize("Ready.")

    def speak(self, text: str, speed: float = 1.0) -> bytes:
        """``text`` (a sentence) as PCM16LE at :data:`SAMPLE_RATE` (blocking)."""
        with self._lock:
            tts = self._load()
            try:
                parts = [tts.from_ids(tts.ids(ps), speed) for ps in tts.phonemize(text)]
            except Exception as exc:  # onnxruntime raises its own exception types
                raise TTSError(f"hibari failed: {exc}") from exc
        return b"".join(to_pcm16(p) for p in parts)


def to_pcm16(wav: npt.NDArray[np.float32]) -> bytes:
    return (np.clip(wav, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()


_SHARED = SharedHibari()


def synthesize_blocking(text: str) -> bytes:
    """Synthesise a whole text at 24 kHz (tests, benchmarks, ``vantum say``)."""
    return _SHARED.speak(text)


def split_sentences(text: str) -> list[str]:
    """hibari's own sentence split (pure code), so each piece is one model call."""
    from hibari import Hibari

    sentences: list[str] = Hibari.split_sentences(text)
    return [s.strip() for s in sentences if s.strip()]


def estimate_word_times(text: str, offset: float, duration: float) -> WordTimestamps:
    """Spread ``duration`` over the words of ``text`` in proportion to their length.

    A rough guess (speech rate is not uniform), but it keeps the history cut at a
    barge-in within a word or two of what was heard, which is what it is for.
    """
    words = tuple(text.split())
    if not words or duration <= 0:
        return WordTimestamps((), (), ())
    weights = [len(w) + 1 for w in words]
    total = sum(weights)
    starts: list[float] = []
    ends: list[float] = []
    t = offset
    for w in weights:
        starts.append(t)
        t += duration * w / total
        ends.append(t)
    return WordTimestamps(words, tuple(starts), tuple(ends))


@attrs.define
class _HibariConnection:
    engine: HibariTTS

    @property
    def sample_rate(self) -> int:
        return SAMPLE_RATE

    async def synthesize(
        self,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        out: trio.MemorySendChannel[TTSEvent],
        *,
        voice_id: str | None = None,
        language: str | None = None,
    ) -> None:
        # voice_id and language are ignored on purpose: the wheel holds one English
        # voice, and asking hibari for another would download it.
        eng = self.engine
        chunk_bytes = SAMPLE_RATE * eng.chunk_ms // 1000 * 2
        offset = 0.0
        async with text:
            async for chunk in text:
                for sentence in split_sentences(chunk):
                    pcm = await trio.to_thread.run_sync(
                        _SHARED.speak, sentence, eng.speed, limiter=eng.limiter()
                    )
                    if not pcm:
                        continue
                    duration = len(pcm) / 2 / SAMPLE_RATE
                    await out.send(estimate_word_times(sentence, offset, duration))
                    offset += duration
                    for i in range(0, len(pcm), chunk_bytes):
                        # Each send is a checkpoint: a cancelled answer stops here.
                        await out.send(TTSAudio(pcm[i : i + chunk_bytes]))


@attrs.define
class HibariTTS:
    """hibari's bundled voice; one shared model, a trivial "connection" per session."""

    speed: float = attrs.field(default=1.0, kw_only=True)
    chunk_ms: int = attrs.field(default=60, kw_only=True)
    name: str = attrs.field(default="hibari", init=False)
    sample_rate: int = attrs.field(default=SAMPLE_RATE, init=False)
    _limiter: trio.CapacityLimiter | None = attrs.field(default=None, init=False)

    def limiter(self) -> trio.CapacityLimiter:
        """One synthesis at a time (the model is used under a lock anyway)."""
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        return self._limiter

    async def preload(self) -> None:
        await trio.to_thread.run_sync(_SHARED.load)

    @asynccontextmanager
    async def connect(self, sample_rate: int | None = None) -> AsyncIterator[_HibariConnection]:
        """hibari has one native rate, so ``sample_rate`` is ignored (the player resamples)."""
        await trio.to_thread.run_sync(_SHARED.load, limiter=self.limiter())
        yield _HibariConnection(self)
