"""A spoken conversation through /ws with the embedded offline engines only:
no keys, no network, no fakes (issue 4)."""

from __future__ import annotations

import time
from functools import partial

import pytest
import trio

pytest.importorskip("pocketsphinx")
pytest.importorskip("espeakng_loader")

from test_local_engines import SENTENCES, word_errors

from vantum.audio.resample import StreamResampler
from vantum.config import Config
from vantum.pipeline.session import Engines
from vantum.providers.local_llm import ScriptedResponder
from vantum.providers.local_stt import PocketsphinxSTT
from vantum.providers.local_tts import EspeakTTS, synthesize_blocking
from vantum.server.app import VantumApp
from vantum.server.auth import issue_token, load_secret, new_secret
from vantum.server.run import serve
from vantum.testing.audio_fixtures import silence
from vantum.testing.browser_client import BrowserClient, TurnResult

RATE = 16_000


def spoken(text: str) -> bytes:
    tts = EspeakTTS()
    resampler = StreamResampler(tts.sample_rate, RATE)
    speech = synthesize_blocking(text)
    return resampler.process(speech.pcm) + resampler.flush()


async def test_embedded_conversation_over_ws() -> None:
    secret = new_secret()  # the embedded default runs with token auth on, like `vantum serve`
    cfg = Config(host="127.0.0.1", port=0, graceful_timeout=1.0, auth_secret=secret)
    token = issue_token(
        load_secret(secret), subject="test", audience="ws", ttl_s=60, now=time.time()
    )
    engines = Engines(PocketsphinxSTT(), ScriptedResponder(), EspeakTTS())
    app = VantumApp(cfg, engines)
    stop = trio.Event()
    errors = total = 0
    async with trio.open_nursery() as nursery:
        url = await nursery.start(partial(serve, app, cfg, shutdown_trigger=stop.wait))
        async with BrowserClient.connect(url.replace("http", "ws") + "/ws", token=token) as client:
            for sentence in SENTENCES:
                await client.start(RATE)
                pcm = silence(0.3, RATE) + spoken(sentence) + silence(0.5, RATE)
                result: list[TurnResult] = []

                async def collect(result: list[TurnResult] = result) -> None:
                    result.append(await client.collect_turn())

                async with trio.open_nursery() as turn:
                    turn.start_soon(collect)
                    await client.stream_audio(pcm, RATE, realtime=False)
                    await client.end_turn()
                t = result[0]
                heard = " ".join(t.finals)
                e, n = word_errors(sentence, heard)
                errors, total = errors + e, total + n
                assert t.errors == []
                assert t.text, "the scripted responder answered"
                assert t.audio_seconds > 0.5, "and the answer was spoken"
                assert t.sample_rate == RATE
        stop.set()
    wer = errors / total
    print(f"[embedded /ws] WER {wer:.2f} ({errors}/{total} words)")
    assert wer <= 0.8  # measured 0.50-0.65 on synthetic speech; see docs/embedded.md
