"""An in-memory session harness: the real session pipeline with no sockets.

``open_memory_session`` runs :func:`vantum.pipeline.session.run_session` over a
memory transport with scripted in-process engines, so turn-taking and ordering
can be tested under ``trio.testing.MockClock`` (virtual time: a minute of
conversation runs in milliseconds, deterministically). The socket-level fakes
(``fake_deepgram`` & co.) remain the tests for the wire protocols.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import numpy as np
import trio

from ..errors import ProtocolError
from ..pipeline.events import ServerEvent
from ..pipeline.session import Engines, run_session
from ..pipeline.settings import CallSettings
from ..pipeline.transport import PeerGone
from ..protocol.client_events import ClientEvent
from ..providers.base import (
    NO_CALLS,
    NO_TOOLS,
    ChatMessage,
    Finalize,
    FinalizeDone,
    STTEvent,
    STTInput,
    ToolCall,
    ToolSchema,
    TranscriptEvent,
    TTSAudio,
    TTSEvent,
    WordTimestamps,
)
from ..tools.base import ToolEnv


class MemoryTransport:
    def __init__(
        self,
        session_id: str,
        inbound: trio.MemoryReceiveChannel[ClientEvent | ProtocolError],
        outbound: trio.MemorySendChannel[ServerEvent],
    ) -> None:
        self.session_id = session_id
        self._in = inbound
        self._out = outbound

    async def receive(self) -> ClientEvent | ProtocolError:
        try:
            return await self._in.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise PeerGone() from None

    async def send(self, event: ServerEvent) -> None:
        try:
            await self._out.send(event)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            raise PeerGone() from None

    async def close(self, code: int, reason: str) -> None:
        await self._out.aclose()


@attrs.define
class MemoryClient:
    send: trio.MemorySendChannel[ClientEvent | ProtocolError]
    events: trio.MemoryReceiveChannel[ServerEvent]


@asynccontextmanager
async def open_memory_session(
    engines: Engines, settings: CallSettings | None = None, tool_env: ToolEnv | None = None
) -> AsyncIterator[MemoryClient]:
    c2s_tx, c2s_rx = trio.open_memory_channel[ClientEvent | ProtocolError](64)
    s2c_tx, s2c_rx = trio.open_memory_channel[ServerEvent](10_000)
    transport = MemoryTransport("00000000-0000-7000-8000-000000000000", c2s_rx, s2c_tx)
    async with trio.open_nursery() as nursery:

        async def serve() -> None:
            async with s2c_tx:
                await run_session(transport, engines, settings or CallSettings(), tool_env=tool_env)

        nursery.start_soon(serve)
        async with c2s_tx:
            yield MemoryClient(c2s_tx, s2c_rx)
        nursery.cancel_scope.cancel()


def _is_speech(frame: bytes) -> bool:
    samples = np.frombuffer(frame, dtype="<i2").astype(np.float64)
    return bool(samples.size) and float(np.sqrt(np.mean(samples**2))) > 300.0


@attrs.define
class ScriptedSTT:
    """Reveals the next scripted utterance one word per ``word_interval`` of speech."""

    script: Sequence[str] = ("hello there",)
    word_interval: float = 0.25
    final_latency: float = 0.05
    name: str = "scripted-stt"

    async def run(
        self,
        audio: trio.MemoryReceiveChannel[STTInput],
        events: trio.MemorySendChannel[STTEvent],
        *,
        language: str = "en-US",
    ) -> None:
        utterance = 0
        speech_s = 0.0
        shown = 0
        async with audio, events:
            async for item in audio:
                words = self.script[utterance % len(self.script)].split()
                if isinstance(item, Finalize):
                    await trio.sleep(self.final_latency)
                    if speech_s > 0:
                        await events.send(
                            TranscriptEvent(" ".join(words), is_final=True, from_finalize=True)
                        )
                        utterance += 1
                    speech_s, shown = 0.0, 0
                    await events.send(FinalizeDone())
                    continue
                if not _is_speech(item):
                    continue
                speech_s += len(item) / 32_000
                want = min(len(words), 1 + int(speech_s / self.word_interval))
                if want > shown:
                    shown = want
                    await events.send(TranscriptEvent(" ".join(words[:shown]), is_final=False))


@attrs.define
class ScriptedLLM:
    reply: Callable[[Sequence[ChatMessage]], str] = lambda m: f"You said {m[-1].content}."
    first_token: float = 0.1
    per_token: float = 0.02
    name: str = "scripted-llm"

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = NO_TOOLS,
    ) -> Sequence[ToolCall]:
        await trio.sleep(self.first_token)
        for word in self.reply(messages).split(" "):
            await out.send(word + " ")
            await trio.sleep(self.per_token)
        return NO_CALLS


@attrs.define
class ScriptedTTS:
    """A tone per word; ``seconds_per_char`` of audio per character, with word timings."""

    sample_rate: int = 16_000
    seconds_per_char: float = 0.06
    first_chunk: float = 0.05
    chunk_s: float = 0.04
    realtime_factor: float = 4.0
    delays: Callable[[], float] | None = None
    name: str = "scripted-tts"

    @asynccontextmanager
    async def connect(self, sample_rate: int | None = None) -> AsyncIterator[ScriptedTTS]:
        """Always ``self.sample_rate``: tests of the player's resampling need a fixed rate."""
        yield self

    async def synthesize(
        self,
        context_id: str,
        text: trio.MemoryReceiveChannel[str],
        out: trio.MemorySendChannel[TTSEvent],
        *,
        voice_id: str | None = None,
        language: str | None = None,
    ) -> None:
        offset = 0.0
        first = True
        async with text:
            async for chunk in text:
                await trio.sleep(self.first_chunk if first else 0)
                first = False
                words, starts, ends = [], [], []
                t = offset
                for word in chunk.split():
                    d = (len(word) + 1) * self.seconds_per_char
                    words.append(word)
                    starts.append(t)
                    ends.append(t + d)
                    t += d
                await out.send(WordTimestamps(tuple(words), tuple(starts), tuple(ends)))
                n = round((t - offset) * self.sample_rate)
                tone = 3000 * np.sin(np.arange(n) * 2 * np.pi * 220 / self.sample_rate)
                pcm = tone.astype("<i2").tobytes()
                step = 2 * round(self.chunk_s * self.sample_rate)
                for i in range(0, len(pcm), step):
                    delay = self.delays() if self.delays else self.chunk_s / self.realtime_factor
                    await trio.sleep(delay)
                    await out.send(TTSAudio(pcm[i : i + step]))
                offset = t
