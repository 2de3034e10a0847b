"""A whole Vantum deployment in one ``async with``: the three fake providers and a
real server wired to them, all on 127.0.0.1 with ephemeral ports.

Use it in your own tests::

    async with open_stack() as stack:
        async with BrowserClient.connect(stack.ws_url) as client:
            ...
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import attrs
import trio

from ..config import Config
from ..providers.llm_openai import OpenAILLM
from ..providers.stt_deepgram import DeepgramSTT
from ..providers.tts_cartesia import CartesiaTTS
from ..server.app import VantumApp
from ..server.run import serve
from .fake_cartesia import FakeCartesia, FakeCartesiaConfig, serve_fake_cartesia
from .fake_deepgram import FakeDeepgram, FakeDeepgramConfig, serve_fake_deepgram
from .fake_openai import FakeOpenAI, FakeOpenAIConfig, serve_fake_openai
from .fake_realtime import FakeRealtime, FakeRealtimeConfig, serve_fake_realtime


@attrs.frozen
class Stack:
    url: str
    app: VantumApp
    deepgram: FakeDeepgram
    openai: FakeOpenAI
    cartesia: FakeCartesia
    realtime: FakeRealtime | None = None
    """The fake OpenAI Realtime server when the stack runs in S2S mode."""

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://") + "/ws"

    @property
    def voicechat_url(self) -> str:
        """``/voicechat/ws``: the original TypeScript Vantum's dialect."""
        return self.url.replace("http://", "ws://") + "/voicechat/ws"


@asynccontextmanager
async def open_stack(
    *,
    deepgram: FakeDeepgramConfig | None = None,
    openai: FakeOpenAIConfig | None = None,
    cartesia: FakeCartesiaConfig | None = None,
    tts_sample_rate: int = 24_000,
    stt_options: Mapping[str, Any] | None = None,
    llm_options: Mapping[str, Any] | None = None,
    tts_options: Mapping[str, Any] | None = None,
    realtime: FakeRealtimeConfig | None = None,
    s2s_options: Mapping[str, Any] | None = None,
    **config: Any,
) -> AsyncIterator[Stack]:
    """Start fakes and a server; everything stops when the block exits.

    ``stt_options`` / ``llm_options`` / ``tts_options`` are extra keyword arguments
    for the engines (e.g. shorter timeouts for fault tests). ``realtime``: run calls in
    speech-to-speech mode against a fake OpenAI Realtime server (``s2s_options`` for
    :class:`~vantum.providers.realtime.openai_s2s.OpenAIRealtime`).
    """
    from ..pipeline.session import Engines

    async with (
        serve_fake_deepgram(deepgram or FakeDeepgramConfig()) as dg,
        serve_fake_openai(openai or FakeOpenAIConfig()) as oa,
        serve_fake_cartesia(cartesia or FakeCartesiaConfig()) as ca,
        AsyncExitStack() as extra,
    ):
        rt: FakeRealtime | None = None
        s2s = None
        if realtime is not None:
            from ..providers.realtime.openai_s2s import OpenAIRealtime

            rt = await extra.enter_async_context(serve_fake_realtime(realtime))
            s2s = OpenAIRealtime(rt.api_key, rt.url, **(s2s_options or {}))
        config.setdefault("graceful_timeout", 1.0)
        # Tests connect without tokens unless they pass auth_secret=... to test auth.
        config.setdefault("insecure_no_auth", not config.get("auth_secret"))
        config.setdefault("connect_rate_per_s", 0.0)  # a test suite connects in bursts
        config.setdefault("twilio_connect_rate_per_s", 0.0)
        config.setdefault("audio_rate_margin", None)  # tests stream fixtures faster than real time
        cfg = Config(host="127.0.0.1", port=0, **config)
        engines = Engines(
            DeepgramSTT(dg.api_key, dg.url, **(stt_options or {})),
            OpenAILLM(oa.api_key, oa.base_url, "fake-model", **(llm_options or {})),
            CartesiaTTS(ca.api_key, ca.url, sample_rate=tts_sample_rate, **(tts_options or {})),
            s2s,
        )
        names = {"stt": "deepgram (fake)", "llm": "openai (fake)", "tts": "cartesia (fake)"}
        app = VantumApp(cfg, engines, engine_names=names)
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            url = await nursery.start(
                lambda task_status: serve(
                    app, cfg, shutdown_trigger=stop.wait, task_status=task_status
                )
            )
            try:
                yield Stack(url, app, dg, oa, ca, rt)
            finally:
                stop.set()
