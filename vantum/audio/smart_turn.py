"""Smart Turn v3: does the caller's audio sound like the end of a turn?

The model (``smart-turn-v3.2-cpu.onnx``, 8.7 MB, by Daily, BSD-2-Clause) judges
the last 8 s of 16 kHz audio — intonation and rhythm, not words — and gives the
probability that the speaker has finished. It is *not* in this repository: it is
loaded from the installed ``pipecat-ai`` wheel (1.14.0 ships v3.2), which is found
with ``importlib.util.find_spec`` and never imported (pipecat's own ``__init__``
needs loguru, aiohttp, numba, ... which Vantum does not). Install it with
``pip install --no-deps pipecat-ai==1.14.0`` (``scripts/install-semantic.sh``; a
pip extra cannot say ``--no-deps``, and pipecat's declared dependencies are
~300 MB we would not use).

One ``InferenceSession`` per process (loaded once, off the event loop, shared
read-only); ~25-60 ms of CPU per inference, so it always runs in a worker thread
(:func:`predict_off_loop`) behind one process-wide :class:`trio.CapacityLimiter`:
however many calls pause at once, at most ``VANTUM_SEMANTIC_THREADS`` inferences
run, and the event loop never waits on one.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from typing import Any

import numpy as np
import trio

from .log_mel import last_seconds, log_mel
from .process_model import ProcessModel, onnx_session

log = logging.getLogger("vantum.audio.smart_turn")

MODEL_FILE = ("audio", "turn", "smart_turn", "data", "smart-turn-v3.2-cpu.onnx")
INSTALL_HINT = "pip install --no-deps pipecat-ai==1.14.0 (scripts/install-semantic.sh)"


def model_path() -> str:
    """Where the installed pipecat-ai wheel keeps Smart Turn v3.2 (FileNotFoundError
    when it is not installed, saying how to install it)."""
    spec = importlib.util.find_spec("pipecat")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for root in locations:
        path = os.path.join(root, *MODEL_FILE)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"Smart Turn v3.2 model not installed: {INSTALL_HINT}")


class SmartTurnModel:
    """The process's one Smart Turn session (``InferenceSession.run`` is thread-safe)."""

    def __init__(self, path: str | None = None) -> None:
        self._session = onnx_session(path or model_path())

    def predict(self, pcm16: bytes) -> float:
        """Probability (0..1) that the turn is complete, from 16 kHz PCM16 audio
        (the end of the caller's speech and the pause after it; the last 8 s count).
        Blocking, ~25-60 ms of CPU: call it in a thread."""
        audio = np.frombuffer(pcm16, dtype="<i2").astype(np.float32) / 32768.0
        features = log_mel(last_seconds(audio))[None, :, :]
        out: Any = self._session.run(None, {"input_features": features})
        return float(np.asarray(out[0]).reshape(-1)[0])


_MODEL = ProcessModel(SmartTurnModel)


def load_smart_turn() -> SmartTurnModel:
    """The process's model, loaded on first use (~0.2 s: from a thread or at start-up).
    Raises FileNotFoundError / ImportError when it is not installed."""
    return _MODEL.get()


def smart_turn_unavailable() -> str | None:
    """None when the model can be used, else why not (for logs and test skips)."""
    return _MODEL.unavailable()


def _threads() -> int:
    raw = os.environ.get("VANTUM_SEMANTIC_THREADS", "")
    if raw.strip():
        return max(1, int(raw))
    return max(1, (os.cpu_count() or 2) // 2)


LIMITER = trio.CapacityLimiter(_threads())
"""Process-wide: how many Smart Turn inferences run at once, over all calls."""


async def predict_off_loop(model: SmartTurnModel, pcm16: bytes) -> float:
    """:meth:`SmartTurnModel.predict` in a worker thread, under :data:`LIMITER`."""
    return await trio.to_thread.run_sync(model.predict, pcm16, limiter=LIMITER)


__all__ = [
    "INSTALL_HINT",
    "LIMITER",
    "SmartTurnModel",
    "load_smart_turn",
    "model_path",
    "predict_off_loop",
    "smart_turn_unavailable",
]
