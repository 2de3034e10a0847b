"""Embedded offline speech recognition with PocketSphinx.

Why PocketSphinx: the ``pocketsphinx`` wheel (38 MB) ships a US-English acoustic
model, dictionary and language model, decodes faster than real time on one core
and needs no download, so a fresh machine can listen with no key and no network.
Accuracy is far below a cloud recogniser; set ``DEEPGRAM_API_KEY`` for that.

Shape of the engine:

- :class:`Endpointer` is sans-I/O: per-frame VAD decisions in, "speech started" /
  "speech ended" out. Hypothesis drives it in the tests.
- :class:`Recognizer` owns one PocketSphinx ``Decoder`` (one per session, ~90 MB)
  and turns PCM into :mod:`vantum.providers.base` events. It is blocking code; only
  speech (plus a short pre-roll) reaches the decoder, so silence costs almost
  nothing.
- :class:`PocketsphinxSTT` is the actor: it batches the audio that is already
  queued and hands it to the recogniser with ``trio.to_thread.run_sync``, one call
  at a time, so the decoder is never used from two threads.

The PocketSphinx extension does not release the GIL inside ``process_raw``, so a
worker thread alone would not keep the trio loop responsive. The recogniser feeds
the decoder in slices of at most 100 ms of audio; between slices Python can switch
back to the loop, which bounds the stall to a few milliseconds per slice.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import AsyncIterator, Iterator
from functools import partial
from typing import Any, Literal

import attrs
import trio

from ..errors import STTError
from .base import (
    STT_SAMPLE_RATE,
    Finalize,
    FinalizeDone,
    SpeechStarted,
    STTEvent,
    STTInput,
    TranscriptEvent,
    UtteranceEnd,
)

log = logging.getLogger("vantum.providers.local_stt")

FRAME_MS = 30
"""VAD frame length (PocketSphinx's VAD accepts 10, 20 or 30 ms)."""
_FRAME_BYTES = STT_SAMPLE_RATE * FRAME_MS // 1000 * 2
_SLICE_BYTES = STT_SAMPLE_RATE // 10 * 2
"""Audio per ``process_raw`` call: bounds how long the GIL is held at once."""
_MAX_BATCH_BYTES = STT_SAMPLE_RATE * 2
"""Queued audio gathered into one worker-thread call (at most 1 s)."""


@attrs.define
class Endpointer:
    """Hangover state machine over per-frame speech/non-speech decisions.

    Speech starts after ``start_frames`` speech frames in a row (so a click does
    not open an utterance) and ends after ``end_frames`` non-speech frames in a
    row (the endpointing silence).
    """

    start_frames: int = 5
    end_frames: int = 20
    in_speech: bool = False
    _run: int = 0

    def push(self, is_speech: bool) -> Literal["start", "end"] | None:
        if is_speech != self.in_speech:
            self._run += 1
        else:
            self._run = 0
        if not self.in_speech and self._run >= self.start_frames:
            self.in_speech, self._run = True, 0
            return "start"
        if self.in_speech and self._run >= self.end_frames:
            self.in_speech, self._run = False, 0
            return "end"
        return None

    def reset(self) -> None:
        self.in_speech, self._run = False, 0


def load_decoder(*, dither: bool = True) -> Any:
    """A PocketSphinx decoder with the bundled US-English models (blocking, ~1 s).

    Dither adds sub-LSB noise so digital silence (muted browser tracks, padded
    files) does not drive log-energy to minus infinity and skew the cepstral mean
    normalisation of the next utterance; it makes results slightly random.
    The second (flat-lexicon) search pass is off: it doubled the work done in
    ``end_utt`` (the one long GIL-holding call, ~190 -> ~100 ms CPU per utterance)
    and delays every final transcript, for a 3-point WER gain on our test speech.
    """
    try:
        import pocketsphinx
    except ImportError as exc:
        raise STTError("pocketsphinx is not installed: pip install pocketsphinx") from exc
    try:
        return pocketsphinx.Decoder(
            samprate=STT_SAMPLE_RATE, dither=dither, fwdflat=False, loglevel="FATAL"
        )
    except (RuntimeError, ValueError) as exc:
        raise STTError(f"pocketsphinx could not load its model: {exc}") from exc


class Recognizer:
    """One session's blocking recogniser: PCM in, STT events out."""

    def __init__(
        self,
        decoder: Any,
        *,
        endpoint_silence_ms: int = 600,
        interim_every_ms: int = 300,
        preroll_ms: int = 300,
        vad_mode: int = 2,
        language: str = "en-US",
    ) -> None:
        import pocketsphinx

        self._decoder = decoder
        self._vad = pocketsphinx.Vad(vad_mode, STT_SAMPLE_RATE, FRAME_MS / 1000)
        self._endpointer = Endpointer(end_frames=max(1, endpoint_silence_ms // FRAME_MS))
        self._interim_every = STT_SAMPLE_RATE * interim_every_ms // 1000
        self._preroll: collections.deque[bytes] = collections.deque(
            maxlen=max(1, preroll_ms // FRAME_MS)
        )
        self._language = language
        self._partial = bytearray()  # an incomplete VAD frame
        self._pending = bytearray()  # speech not yet given to the decoder
        self._samples = 0  # stream clock: samples seen
        self._utt_start: float | None = None
        self._since_interim = 0
        self._last_interim = ""

    @property
    def now(self) -> float:
        return self._samples / STT_SAMPLE_RATE

    def feed(self, pcm: bytes) -> list[STTEvent]:
        self._partial += pcm
        events: list[STTEvent] = []
        n = len(self._partial) // _FRAME_BYTES * _FRAME_BYTES
        view = bytes(self._partial[:n])
        del self._partial[:n]
        for i in range(0, n, _FRAME_BYTES):
            frame = view[i : i + _FRAME_BYTES]
            edge = self._endpointer.push(self._vad.is_speech(frame))
            self._samples += _FRAME_BYTES // 2
            if self._utt_start is None and edge != "start":
                self._preroll.append(frame)
                continue
            if edge == "start":
                self._utt_start = self.now - (len(self._preroll) + 1) * FRAME_MS / 1000
                self._decoder.start_utt()
                self._pending += b"".join(self._preroll)
                self._preroll.clear()
                events.append(SpeechStarted(self._utt_start))
            self._pending += frame
            self._since_interim += _FRAME_BYTES // 2
            if edge == "end":
                events.extend(self._end_utterance(from_finalize=False))
            elif len(self._pending) >= _SLICE_BYTES:
                self._flush(whole_slices_only=True)
        if self._utt_start is not None:
            self._flush(whole_slices_only=True)
            events.extend(self._interim())
        return events

    def finalize(self) -> list[STTEvent]:
        """Flush the current utterance (the caller's end of turn)."""
        events: list[STTEvent] = []
        if self._utt_start is not None:
            self._pending += self._partial
            self._partial.clear()
            events.extend(self._end_utterance(from_finalize=True))
        events.append(FinalizeDone())
        return events

    def close(self) -> list[STTEvent]:
        """End of audio: whatever is still open is final."""
        if self._utt_start is None:
            return []
        self._pending += self._partial
        self._partial.clear()
        return self._end_utterance(from_finalize=False)

    def _flush(self, *, whole_slices_only: bool = False) -> None:
        """Give pending speech to the decoder in fixed 100 ms slices.

        Slice boundaries must not depend on how audio happened to be batched
        (which varies with scheduling): the decoder's live feature normalisation
        makes its output depend on them. So mid-utterance only whole slices go in;
        the remainder waits for the next batch or the end of the utterance.
        """
        keep = len(self._pending) % _SLICE_BYTES if whole_slices_only else 0
        usable = len(self._pending) - keep
        for piece in _slices(self._pending[:usable]):
            self._decoder.process_raw(piece, False, False)
        del self._pending[:usable]

    def _interim(self) -> list[STTEvent]:
        if self._since_interim < self._interim_every or self._utt_start is None:
            return []
        self._since_interim = 0
        hyp = self._decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        if not text or text == self._last_interim:
            return []
        self._last_interim = text
        return [self._transcript(text, is_final=False)]

    def _end_utterance(self, *, from_finalize: bool) -> list[STTEvent]:
        self._flush()
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        text = hyp.hypstr if hyp is not None else ""
        confidence = self._confidence(hyp)
        last_word_end = self._last_word_end()
        events: list[STTEvent] = []
        if text:
            events.append(
                self._transcript(
                    text,
                    is_final=True,
                    speech_final=not from_finalize,
                    from_finalize=from_finalize,
                    confidence=confidence,
                )
            )
            if not from_finalize:
                events.append(UtteranceEnd(last_word_end))
        self._utt_start = None
        self._since_interim = 0
        self._last_interim = ""
        self._endpointer.reset()
        return events

    def _transcript(self, text: str, **kw: Any) -> TranscriptEvent:
        start = self._utt_start if self._utt_start is not None else self.now
        return TranscriptEvent(
            text, start=start, duration=self.now - start, language=self._language, **kw
        )

    def _confidence(self, hyp: Any) -> float:
        if hyp is None:
            return 0.0
        try:
            p = float(self._decoder.get_logmath().exp(hyp.prob))
        except (AttributeError, OverflowError, ValueError):
            return 0.0
        return min(1.0, max(0.0, p))

    def _last_word_end(self) -> float:
        start = self._utt_start if self._utt_start is not None else 0.0
        end = start
        for seg in self._decoder.seg():
            word: str = seg.word
            if not word.startswith(("<", "[")):
                end = start + (seg.end_frame + 1) / 100
        return end


def _slices(buf: bytearray) -> Iterator[bytes]:
    for i in range(0, len(buf), _SLICE_BYTES):
        yield bytes(buf[i : i + _SLICE_BYTES])


@attrs.define
class PocketsphinxSTT:
    """Offline streaming STT; one decoder per session, loaded when ``run`` starts."""

    endpoint_silence_ms: int = attrs.field(default=600, kw_only=True)
    vad_mode: int = attrs.field(default=2, kw_only=True)
    """PocketSphinx VAD aggressiveness 0 (loose) .. 3 (strict)."""
    dither: bool = attrs.field(default=True, kw_only=True)
    """See :func:`load_decoder`; tests turn it off for repeatable transcripts."""
    name: str = attrs.field(default="pocketsphinx", init=False)

    async def run(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        *,
        language: str = "en-US",
    ) -> None:
        async with events, audio:
            if not language.lower().startswith("en"):
                log.warning("pocketsphinx only has English models; ignoring %r", language)
            decoder = await trio.to_thread.run_sync(partial(load_decoder, dither=self.dither))
            rec = Recognizer(
                decoder,
                endpoint_silence_ms=self.endpoint_silence_ms,
                vad_mode=self.vad_mode,
                language="en-US",
            )
            async for batch in _batches(audio):
                try:
                    if isinstance(batch, Finalize):
                        out = await trio.to_thread.run_sync(rec.finalize)
                    else:
                        out = await trio.to_thread.run_sync(rec.feed, batch)
                except RuntimeError as exc:
                    if isinstance(batch, Finalize):
                        await events.send(FinalizeDone())  # the turn waits for it
                    raise STTError(f"pocketsphinx failed: {exc}") from exc
                for ev in out:
                    await events.send(ev)
            for ev in await trio.to_thread.run_sync(rec.close):
                await events.send(ev)


async def _batches(audio: trio.MemoryReceiveChannel[STTInput]) -> AsyncIterator[STTInput]:
    """Yield Finalize markers as they come and join audio that is already queued.

    Joining lets a recogniser that fell behind catch up with fewer thread hops,
    without ever reordering audio and markers.
    """
    held: STTInput | None = None
    while True:
        if held is not None:
            item, held = held, None
        else:
            try:
                item = await audio.receive()
            except trio.EndOfChannel:
                return
        if isinstance(item, Finalize):
            yield item
            continue
        buf = bytearray(item)
        while len(buf) < _MAX_BATCH_BYTES:
            try:
                nxt = audio.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if isinstance(nxt, Finalize):
                held = nxt
                break
            buf += nxt
        yield bytes(buf)
