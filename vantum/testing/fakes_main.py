"""``vantum fakes``: run the three fake providers until interrupted.

Prints the environment that points ``vantum serve`` at them, so the whole cloud
path (Deepgram, OpenAI-compatible, Cartesia clients) can be exercised by hand or
benchmarked on a machine without network.
"""

from __future__ import annotations

import trio

from .fake_cartesia import FakeCartesiaConfig, serve_fake_cartesia
from .fake_deepgram import FakeDeepgramConfig, serve_fake_deepgram
from .fake_openai import FakeOpenAIConfig, serve_fake_openai
from .llm_script import ScriptStep


async def run_fakes(host: str = "127.0.0.1", llm_script: tuple[ScriptStep, ...] = ()) -> None:
    """``llm_script``: the fake OpenAI's tool calls on cue (``--llm-script``)."""
    async with (
        serve_fake_deepgram(FakeDeepgramConfig(), host=host) as dg,
        serve_fake_openai(FakeOpenAIConfig(script=llm_script), host=host) as oa,
        serve_fake_cartesia(FakeCartesiaConfig(), host=host) as ca,
    ):
        print("fake providers running; point the server at them with:", flush=True)
        print(f"  export DEEPGRAM_API_KEY={dg.api_key} DEEPGRAM_URL={dg.url}")
        print(f"  export OPENAI_API_KEY={oa.api_key} OPENAI_BASE_URL={oa.base_url}")
        print(f"  export CARTESIA_API_KEY={ca.api_key} CARTESIA_URL={ca.url}", flush=True)
        await trio.sleep_forever()
