"""In-band ``send_dtmf`` inside an answer, on the real session pipeline in virtual time
(MockClock, in-memory engines): the tones play between the words said before the
call and the answer after it, never as text; a TTS that fails still lets the keys
out; a call that is not a phone call gets the tool error instead of tones."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import numpy as np
import trio
import trio.testing

from vantum.agent_spec import AgentSpec, BuiltinTool
from vantum.errors import TTSError
from vantum.pipeline import events as e
from vantum.pipeline.session import Engines
from vantum.pipeline.settings import CallSettings, TurnPolicy
from vantum.protocol.client_events import TextInput
from vantum.providers.base import NO_CALLS, ChatMessage, ToolCall, ToolSchema, TTSEvent
from vantum.testing.dtmf_detect import DtmfDetector
from vantum.testing.memory import MemoryClient, ScriptedSTT, ScriptedTTS, open_memory_session
from vantum.tools.base import ToolEnv

AGENT = AgentSpec("ivr", "You press keys.", tools=(BuiltinTool("send_dtmf"),))
SETTINGS = CallSettings(agent=AGENT, turn=TurnPolicy(idle_prompt_s=None))


@attrs.define
class MenuLLM:
    """Says "Pressing one." and calls send_dtmf("1#"), then answers "Done."."""

    seen: list[list[ChatMessage]] = attrs.Factory(list)
    name: str = "menu-llm"

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = (),
    ) -> Sequence[ToolCall]:
        self.seen.append(list(messages))
        await trio.sleep(0.05)
        if messages[-1].role == "user" and tools:
            await out.send("Pressing one.")
            return (ToolCall("c1", "send_dtmf", '{"digits": "1#"}'),)
        await out.send("Done.")
        return NO_CALLS


@attrs.define
class FailingTTS(ScriptedTTS):
    """Fails every synthesis (the provider is gone)."""

    async def synthesize(
        self,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        out: trio.MemorySendChannel[TTSEvent],
        *,
        voice_id: str | None = None,
        language: str | None = None,
    ) -> None:
        async with text:
            await text.receive()
        raise TTSError("provider gone")


async def run_turn(tts: ScriptedTTS, env: ToolEnv) -> tuple[list[e.ServerEvent], MenuLLM]:
    llm = MenuLLM()
    got: list[e.ServerEvent] = []

    async def collect(client: MemoryClient) -> None:
        async for event in client.events:
            got.append(event)
            if isinstance(event, e.ResponseComplete):
                return

    async with open_memory_session(Engines(ScriptedSTT(), llm, tts), SETTINGS, env) as client:
        await client.send.send(TextInput("t1", "the menu says press one"))
        await collect(client)
    return got, llm


def loud(samples: np.ndarray) -> bool:
    return len(samples) > 0 and float(np.sqrt(np.mean(samples.astype(float) ** 2))) > 300


async def test_tones_play_between_the_words(autojump_clock: trio.testing.MockClock) -> None:
    events, llm = await run_turn(ScriptedTTS(), ToolEnv(b"k", None, "CA1", phone=True))
    chunks = [ev for ev in events if isinstance(ev, e.OutputChunk)]
    rate = chunks[0].rate
    pcm = b"".join(c.pcm for c in chunks)
    detector = DtmfDetector(rate)
    detector.feed(pcm)
    assert detector.digits == "1#"
    samples = np.frombuffer(pcm, "<i2")
    first, last = detector.at[0], detector.at[-1]
    assert loud(samples[: first - int(0.15 * rate)])  # "Pressing one." before
    assert loud(samples[last + int(0.3 * rate) :])  # "Done." after
    assert [ev.text for ev in events if isinstance(ev, e.ResponseText)] == [
        "Pressing one.",
        "Done.",
    ]
    assert '"via": "tones"' in llm.seen[1][-1].content


async def test_a_failed_tts_still_presses_the_keys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    events, _ = await run_turn(FailingTTS(), ToolEnv(b"k", None, "CA1", phone=True))
    chunks = [ev for ev in events if isinstance(ev, e.OutputChunk)]
    detector = DtmfDetector(chunks[0].rate)
    detector.feed(b"".join(c.pcm for c in chunks))
    assert detector.digits == "1#"
    assert any(isinstance(ev, e.ErrorEvent) for ev in events)


async def test_not_a_phone_call_no_tones(autojump_clock: trio.testing.MockClock) -> None:
    events, llm = await run_turn(ScriptedTTS(), ToolEnv(b"k", None, "session-1"))
    pcm = b"".join(ev.pcm for ev in events if isinstance(ev, e.OutputChunk))
    assert DtmfDetector(SETTINGS.output_rate).feed(pcm) == ""
    assert "send_dtmf needs a phone call" in llm.seen[1][-1].content
