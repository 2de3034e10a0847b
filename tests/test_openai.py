"""OpenAILLM against the fake OpenAI server, retry policy and spoken fallbacks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, MutableMapping, Sequence
from typing import Any

import httpx
import openai
import pytest
import trio
import trio.testing

from vantum.errors import LLMError, LLMErrorKind
from vantum.pipeline.chunker import SemanticChunker
from vantum.providers.base import ChatMessage, ToolCall, ToolSchema
from vantum.providers.llm_openai import OpenAILLM, parse_retry_after
from vantum.providers.llm_retry import (
    FallbackMessages,
    fallback_tier,
    retry_delay,
    stream_with_retry,
)
from vantum.testing.fake_openai import (
    FakeOpenAI,
    FakeOpenAIConfig,
    echo_responder,
    serve_fake_openai,
)

FAST = FakeOpenAIConfig(first_token_latency=0.01, tokens_per_second=2000)
HELLO = [ChatMessage("system", "Be brief."), ChatMessage("user", "hello there")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with serve_fake_openai(FAST) as server:
        yield server


@pytest.fixture
async def llm(fake: FakeOpenAI) -> AsyncIterator[OpenAILLM]:
    async with OpenAILLM(fake.api_key, base_url=fake.base_url, timeout=5.0) as engine:
        yield engine


async def collect(
    engine: Any, messages: Sequence[ChatMessage], *, retry: bool = False
) -> list[str]:
    """Run one answer into a channel and return the deltas (re-raising the LLMError)."""
    tx, rx = trio.open_memory_channel[str](1000)
    deltas: list[str] = []
    try:
        if retry:
            await stream_with_retry(engine, messages, tx, base_delay=0.01)
        else:
            await engine.stream(messages, tx)
    finally:
        tx.close()
        deltas.extend([d async for d in rx])
    return deltas


# ----------------------------------------------------------------- streaming


async def test_streamed_text_equals_responder_text(fake: FakeOpenAI, llm: OpenAILLM) -> None:
    deltas = await collect(llm, HELLO)
    assert "".join(deltas) == echo_responder([{"role": "user", "content": "hello there"}])
    assert len(deltas) > 5  # really streamed in small tokens
    body = fake.requests[-1]
    assert body["model"] == "gpt-4o-mini"
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["max_completion_tokens"] == 300
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hello there"},
    ]
    assert llm.last_usage is not None
    assert llm.last_usage.completion_tokens == len(deltas)
    assert fake.completed == 1


async def test_stream_feeds_the_chunker(llm: OpenAILLM) -> None:
    chunker = SemanticChunker()
    chunks = [c for d in await collect(llm, HELLO) for c in chunker.feed(d)] + chunker.flush()
    assert chunks == ["You said: hello there.", "That is interesting.", "Tell me more."]


async def test_custom_responder_and_length_limit() -> None:
    config = FakeOpenAIConfig(
        first_token_latency=0.0, tokens_per_second=5000, responder=lambda m: f"{len(m)} messages"
    )
    async with (
        serve_fake_openai(config) as fake,
        OpenAILLM(fake.api_key, base_url=fake.base_url, max_completion_tokens=2) as llm,
    ):
        assert "".join(await collect(llm, HELLO)) == "2 messages"[:8]  # 2 tokens of 4 chars


async def test_sse_wire_format(fake: FakeOpenAI) -> None:
    headers = {"Authorization": f"Bearer {fake.api_key}"}
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{fake.base_url}/chat/completions", json=body, headers=headers
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block]
    assert all(event.startswith("data: ") for event in events)
    assert events[-1] == "data: [DONE]"
    chunks = [json.loads(event[6:]) for event in events[:-1]]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(chunks) - 3


async def test_non_streaming_completion_and_models(fake: FakeOpenAI) -> None:
    client = openai.AsyncOpenAI(api_key=fake.api_key, base_url=fake.base_url, max_retries=0)
    async with client:
        completion = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "yo"}]
        )
        models = await client.models.list()
    assert completion.choices[0].message.content == echo_responder(
        [{"role": "user", "content": "yo"}]
    )
    assert [m.id for m in models.data] == ["gpt-4o-mini"]


async def test_first_token_latency_is_realistic() -> None:
    config = FakeOpenAIConfig(first_token_latency=0.2, tokens_per_second=1000)
    async with (
        serve_fake_openai(config) as fake,
        OpenAILLM(fake.api_key, base_url=fake.base_url) as llm,
    ):
        tx, rx = trio.open_memory_channel[str](1000)
        start = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(llm.stream, HELLO, tx)
            await rx.receive()
            first = trio.current_time() - start
    assert 0.2 <= first < 1.0


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (401, LLMErrorKind.AUTH),
        (403, LLMErrorKind.AUTH),
        (429, LLMErrorKind.RATE_LIMIT),
        (500, LLMErrorKind.NETWORK),
        (503, LLMErrorKind.NETWORK),
    ],
)
async def test_http_errors_map_to_kinds(
    fake: FakeOpenAI, llm: OpenAILLM, status: int, kind: LLMErrorKind
) -> None:
    fake.fail_next(status, retry_after=1.5)
    with pytest.raises(LLMError) as info:
        await collect(llm, HELLO)
    assert info.value.kind is kind
    if kind is LLMErrorKind.RATE_LIMIT:
        assert info.value.retry_after == 1.5
    assert fake.statuses == [status]


async def test_wrong_key_is_auth(fake: FakeOpenAI) -> None:
    async with OpenAILLM("sk-wrong", base_url=fake.base_url) as llm:
        with pytest.raises(LLMError) as info:
            await collect(llm, HELLO)
    assert info.value.kind is LLMErrorKind.AUTH
    assert fake.requests == []  # rejected before the body was looked at


async def test_invalid_request_is_fatal(llm: OpenAILLM) -> None:
    with pytest.raises(LLMError) as info:
        await collect(llm, [])  # the server requires at least one message
    assert info.value.kind is LLMErrorKind.FATAL


async def test_connection_refused_is_network() -> None:
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound but not listening: connections are refused
        async with OpenAILLM("k", base_url=f"http://127.0.0.1:{port}/v1") as llm:
            with pytest.raises(LLMError) as info:
                await collect(llm, HELLO)
    assert info.value.kind is LLMErrorKind.NETWORK


async def test_stall_mid_stream_times_out_and_is_not_retried(fake: FakeOpenAI) -> None:
    fake.stall_next(10.0)
    async with OpenAILLM(fake.api_key, base_url=fake.base_url, timeout=0.3) as llm:
        tx, rx = trio.open_memory_channel[str](1000)
        with pytest.raises(LLMError) as info:
            await stream_with_retry(llm, HELLO, tx, base_delay=0.01)
    tx.close()
    deltas = [d async for d in rx]
    assert info.value.kind is LLMErrorKind.NETWORK
    reply = echo_responder([{"role": "user", "content": "hello there"}])
    assert deltas and reply.startswith("".join(deltas)) and "".join(deltas) != reply
    assert fake.statuses == [200]  # text was already out: no second attempt


# ----------------------------------------------------------------- retry and cancel


async def test_rate_limit_then_success_speaks_answer_once(fake: FakeOpenAI, llm: OpenAILLM) -> None:
    fake.fail_next(429, retry_after=0.05)
    deltas = await collect(llm, HELLO, retry=True)
    assert "".join(deltas) == echo_responder([{"role": "user", "content": "hello there"}])
    assert fake.statuses == [429, 200]
    assert len(fake.requests) == 2


async def test_persistent_server_errors_give_up(fake: FakeOpenAI, llm: OpenAILLM) -> None:
    fake.fail_next(500, count=5)
    with pytest.raises(LLMError) as info:
        await collect(llm, HELLO, retry=True)
    assert info.value.kind is LLMErrorKind.NETWORK
    assert fake.statuses == [500, 500, 500]


async def test_auth_error_is_not_retried(fake: FakeOpenAI, llm: OpenAILLM) -> None:
    fake.fail_next(401, count=3)
    with pytest.raises(LLMError):
        await collect(llm, HELLO, retry=True)
    assert fake.statuses == [401]


async def test_cancel_mid_stream_closes_the_http_stream() -> None:
    config = FakeOpenAIConfig(first_token_latency=0.0, tokens_per_second=20)
    async with (
        serve_fake_openai(config) as fake,
        OpenAILLM(fake.api_key, base_url=fake.base_url) as llm,
    ):
        tx, rx = trio.open_memory_channel[str](1000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream_with_retry, llm, HELLO, tx)
            await rx.receive()
            cancelled_at = trio.current_time()
            nursery.cancel_scope.cancel()
        returned_in = trio.current_time() - cancelled_at
        with trio.fail_after(2):
            await fake.wait_until(lambda: fake.disconnects == 1)
    assert returned_in < 0.1
    assert fake.completed == 0


class ScriptedLLM:
    """An in-process engine that fails or answers on cue, timestamping each attempt."""

    name = "scripted"

    def __init__(self, script: list[LLMError | list[str]]) -> None:
        self.script = script
        self.attempts: list[float] = []

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = (),
    ) -> Sequence[ToolCall]:
        self.attempts.append(trio.current_time())
        step = self.script.pop(0)
        if isinstance(step, LLMError):
            raise step
        for delta in step:
            await out.send(delta)
        return ()


def net(retry_after: float | None = None) -> LLMError:
    kind = LLMErrorKind.NETWORK if retry_after is None else LLMErrorKind.RATE_LIMIT
    return LLMError(kind, "boom", retry_after)


async def run_scripted(engine: ScriptedLLM) -> tuple[list[str], LLMError | None]:
    tx, rx = trio.open_memory_channel[str](100)
    error = None
    try:
        await stream_with_retry(engine, HELLO, tx)
    except LLMError as exc:
        error = exc
    tx.close()
    return [d async for d in rx], error


async def test_backoff_is_exponential(autojump_clock: trio.testing.MockClock) -> None:
    engine = ScriptedLLM([net(), net(), net()])
    _, error = await run_scripted(engine)
    assert error is not None
    assert engine.attempts == pytest.approx([0.0, 0.25, 0.75])


async def test_retry_after_is_honoured_and_capped(autojump_clock: trio.testing.MockClock) -> None:
    engine = ScriptedLLM([net(retry_after=2.0), net(retry_after=60.0), ["ok"]])
    deltas, error = await run_scripted(engine)
    assert (deltas, error) == (["ok"], None)
    assert engine.attempts == pytest.approx([0.0, 2.0, 6.0])


async def test_error_after_first_delta_is_not_retried(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class HalfAnswer(ScriptedLLM):
        async def stream(
            self,
            messages: Sequence[ChatMessage],
            out: trio.MemorySendChannel[str],
            tools: Sequence[ToolSchema] = (),
        ) -> Sequence[ToolCall]:
            self.attempts.append(trio.current_time())
            await out.send("Hello")
            raise net()

    engine = HalfAnswer([])
    deltas, error = await run_scripted(engine)
    assert deltas == ["Hello"]
    assert error is not None and error.kind is LLMErrorKind.NETWORK
    assert len(engine.attempts) == 1


def test_retry_delay() -> None:
    assert [retry_delay(n, None, base_delay=0.25, max_delay=4.0) for n in (1, 2, 3, 6)] == [
        0.25,
        0.5,
        1.0,
        4.0,
    ]
    assert retry_delay(1, 0.1, base_delay=0.25, max_delay=4.0) == 0.1
    assert retry_delay(1, 30.0, base_delay=0.25, max_delay=4.0) == 4.0


def test_parse_retry_after() -> None:
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after-ms": "150", "retry-after": "9"}) == pytest.approx(0.15)
    date = "Wed, 21 Oct 2015 07:28:10 GMT"
    assert parse_retry_after({"retry-after": date}, now=1445412480.0) == 10.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# ----------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    ("kind", "failures", "tier"),
    [
        (LLMErrorKind.NETWORK, 1, 1),
        (LLMErrorKind.RATE_LIMIT, 1, 1),
        (LLMErrorKind.NETWORK, 2, 2),
        (LLMErrorKind.RATE_LIMIT, 3, 3),
        (LLMErrorKind.AUTH, 1, 3),
        (LLMErrorKind.FATAL, 1, 3),
    ],
)
def test_fallback_tier(kind: LLMErrorKind, failures: int, tier: int) -> None:
    assert fallback_tier(kind, failures) == tier


def test_fallback_messages_escalate_and_reset() -> None:
    fallbacks = FallbackMessages()
    spoken = [fallbacks.message_for(LLMErrorKind.NETWORK) for _ in range(4)]
    assert spoken == [fallbacks.tier1, fallbacks.tier2, fallbacks.tier3, fallbacks.tier3]
    assert "say it again" in fallbacks.tier1
    assert "technical trouble" in fallbacks.tier3
    fallbacks.success()
    assert fallbacks.message_for(LLMErrorKind.RATE_LIMIT) == fallbacks.tier1
    fallbacks.success()
    assert fallbacks.message_for(LLMErrorKind.AUTH) == fallbacks.tier3


async def test_tokens_keep_their_schedule_after_a_late_send(autojump_clock: Any) -> None:
    """A model streams at its own rate: when the fake's process is late for one token
    (a busy core in a benchmark), the tokens after it are still due on the original
    schedule. Paced by relative sleeps, every later token carried the delay."""
    config = FakeOpenAIConfig(first_token_latency=0.3, tokens_per_second=50, chars_per_token=4)
    fake = FakeOpenAI(config)
    sent: list[float] = []
    start = trio.current_time()

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.body" and b'"content":' in message["body"]:
            sent.append(trio.current_time() - start)
            if len(sent) == 4:  # the role chunk, then the third token
                await trio.sleep(0.05)  # this process was busy for 50 ms

    payload = {"model": "m", "stream": True, "messages": [{"role": "user", "content": "x"}]}
    await fake._stream(payload, "one two three four five six seven eight", None, send)
    tokens = sent[1:]  # the first body is the role chunk, at first_token_latency
    assert sent[0] == pytest.approx(0.3)
    late = [t - (0.3 + i * 0.02) for i, t in enumerate(tokens)]
    assert late[2] == pytest.approx(0.0)  # the late one was sent on time, then held
    assert late[3] == pytest.approx(0.03)  # due 20 ms after it: 30 ms late
    assert late[4] == pytest.approx(0.01)  # due 40 ms after it: 10 ms late
    assert all(x == pytest.approx(0.0) for x in late[5:])  # back on schedule
