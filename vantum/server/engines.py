"""Choosing an engine for each stage: the cloud provider when its key is set,
the embedded offline engine otherwise — each stage independently."""

from __future__ import annotations

from ..config import Config
from ..pipeline.session import Engines
from ..providers.base import LLMEngine, STTEngine, TTSEngine


def build_engines(config: Config) -> tuple[Engines, dict[str, str]]:
    stt: STTEngine
    llm: LLMEngine
    tts: TTSEngine
    if config.deepgram_api_key:
        from ..providers.stt_deepgram import DeepgramSTT

        stt = DeepgramSTT(config.deepgram_api_key, config.deepgram_url, model=config.deepgram_model)
    else:
        from ..providers.local_stt import PocketsphinxSTT

        stt = PocketsphinxSTT()
    if config.openai_api_key:
        from ..providers.llm_openai import OpenAILLM

        llm = OpenAILLM(config.openai_api_key, config.openai_base_url, config.openai_model)
    else:
        from ..providers.local_llm import best_local_llm

        llm = best_local_llm()
    if config.cartesia_api_key:
        from ..providers.tts_cartesia import CartesiaTTS

        tts = CartesiaTTS(
            config.cartesia_api_key,
            config.cartesia_url,
            voice_id=config.cartesia_voice_id,
            sample_rate=config.cartesia_sample_rate,
        )
    else:
        from ..providers.local_tts import EspeakTTS

        tts = EspeakTTS()
    names = {"stt": stt.name, "llm": llm.name, "tts": tts.name}
    return Engines(stt, llm, tts), names
