"""One model per process, built on first use: what the VAD and end-of-turn models share.

A neural model (its ONNX session, its weights) is loaded once per process and shared
by every call: loading costs 0.1-0.5 s of CPU and tens of MB, a call costs only its
own state. The first call to :meth:`ProcessModel.get` builds it under a lock (calls
load from worker threads, several at once); later calls return the same instance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class ProcessModel(Generic[T]):
    """The process's instance of a model built by ``build`` (loaded on first use)."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._lock = threading.Lock()
        self._model: T | None = None

    def get(self) -> T:
        """The model, building it if this is the first use (blocking: call it from a
        thread or at start-up). Raises whatever building raises (not installed, a
        runtime refusing the model); the next call tries again."""
        with self._lock:
            if self._model is None:
                self._model = self._build()
            return self._model

    def unavailable(self) -> str | None:
        """None when the model can be used, else why not (for logs and test skips)."""
        try:
            self.get()
        except Exception as exc:  # not installed, or the runtime refusing the model
            return f"{type(exc).__name__}: {exc}"
        return None


def onnx_session(path: str) -> Any:
    """An ONNX Runtime session for one of the process's small models: one thread per
    inference and no spinning. Calls share the cores; a thread pool (or a spinning
    one) per model would only add wake-ups and burn the CPU other calls need, and the
    callers' own limiters, not ORT's pool, decide how many inferences run at once."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
