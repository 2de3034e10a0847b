"""The sans-I/O chat stream parser, and OpenAILLM on streams the fake does not produce."""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from vantum.errors import LLMError, LLMErrorKind
from vantum.providers.base import ChatMessage
from vantum.providers.llm_openai import OpenAILLM
from vantum.providers.openai_sse import (
    ChatStreamEvent,
    ChatStreamParser,
    MalformedStreamError,
    StreamError,
    TokenUsage,
    parse_chat_stream,
    usage_counts,
)

USAGE = {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10}


def chunk(content: object = None, **extra: object) -> dict[str, object]:
    delta = {} if content is None else {"content": content}
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}
    return {"id": "chatcmpl-1", "object": "chat.completion.chunk", "choices": [choice], **extra}


def sse(data: object, eol: str = "\n", multiline: bool = False) -> bytes:
    """One event; ``multiline`` spreads the JSON over several ``data:`` lines."""
    if isinstance(data, str):
        text = data
    else:
        text = json.dumps(data, ensure_ascii=False, indent=1 if multiline else None)
    lines = "".join(f"data: {line}{eol}" for line in text.split("\n"))
    return f"{lines}{eol}".encode()


def answer_body(deltas: list[str], eol: str = "\n", multiline: bool = False) -> bytes:
    """A stream as OpenAI sends it: role delta, content deltas, finish, usage, [DONE]."""
    first = chunk()
    first["choices"][0]["delta"] = {"role": "assistant", "content": ""}  # type: ignore[index]
    events = [first, *(chunk(d) for d in deltas), chunk(), {"choices": [], "usage": USAGE}]
    return b"".join(sse(e, eol, multiline) for e in events) + sse("[DONE]", eol)


def split_at(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    return [body[a:b] for a, b in itertools.pairwise(points)]


def feed_all(pieces: list[bytes]) -> tuple[list[ChatStreamEvent], bool]:
    parser = ChatStreamParser()
    events = [event for piece in pieces for event in parser.feed(piece)]
    return events, parser.done


# ----------------------------------------------------------------- properties

texts = st.lists(st.text(min_size=1, max_size=8), max_size=12)


@given(
    texts,
    st.sampled_from(["\n", "\r\n", "\r"]),
    st.booleans(),
    st.lists(st.integers(0, 10_000)),
)
def test_any_split_gives_the_same_events(
    deltas: list[str], eol: str, multiline: bool, cuts: list[int]
) -> None:
    body = answer_body(deltas, eol, multiline)
    events, done = feed_all(split_at(body, cuts))
    assert events == [*deltas, TokenUsage(7, 3, 10)]
    assert done


@given(texts)
def test_byte_at_a_time_equals_whole(deltas: list[str]) -> None:
    body = answer_body(deltas, "\r\n", multiline=True)
    assert feed_all([body[i : i + 1] for i in range(len(body))]) == feed_all([body])


@given(
    texts,
    st.sampled_from(
        [b'{"choi', b"not json", b"[1, 2]", b'"text"', b'{"choices": "oops"}', b'"\xff"']
    ),
    st.lists(st.integers(0, 10_000)),
)
def test_malformed_event_raises_after_the_deltas_before_it(
    deltas: list[str], bad: bytes, cuts: list[int]
) -> None:
    body = b"".join(sse(chunk(d)) for d in deltas) + b"data: " + bad + b"\n\n"
    parser = ChatStreamParser()
    seen: list[ChatStreamEvent] = []
    with pytest.raises(MalformedStreamError):
        for piece in split_at(body, cuts):
            seen.extend(parser.feed(piece))
    assert seen == deltas


# ----------------------------------------------------------------- examples


def test_done_stops_the_stream() -> None:
    body = sse(chunk("a")) + sse("[DONE]") + sse("not json") + sse(chunk("b"))
    events, done = feed_all([body])
    assert (events, done) == (["a"], True)


def test_error_object_is_an_event_and_ends_the_stream() -> None:
    error = {"message": "overloaded", "type": "server_error", "code": None}
    body = sse(chunk("a")) + sse({"error": error}) + sse(chunk("b"))
    assert parse_chat_stream(body) == ["a", StreamError("overloaded", error)]
    assert parse_chat_stream(sse({"error": "boom"})) == [
        StreamError("An error occurred during streaming", "boom")
    ]


def test_sse_framing_details() -> None:
    body = (
        b": keep-alive comment\n\n"
        b"event: ping\n\n"  # no data: skipped, as the SSE specification says
        b"id: 7\nretry: 100\n"
        b'data:{"choices":[{"delta":\n'  # no space after the colon; two data lines
        b'data: {"content":"x"}}]}\n\n'
        b'data: {"choices":[{"delta":{"content":"cut off"}}]}'  # never dispatched
    )
    assert parse_chat_stream(body) == ["x"]


def test_choices_without_text_are_skipped() -> None:
    odd = {"choices": ["x", {"delta": "y"}, {"delta": {"content": ""}}, {}, {"delta": {}}]}
    assert parse_chat_stream(sse(odd) + sse(chunk("z"))) == ["z"]
    with pytest.raises(MalformedStreamError, match="non-text content"):
        parse_chat_stream(sse(chunk(5)))


def test_usage_needs_three_integer_counts() -> None:
    assert usage_counts(USAGE) == TokenUsage(7, 3, 10)
    assert usage_counts({"prompt_tokens": 7}) is None
    assert usage_counts({**USAGE, "total_tokens": "10"}) is None
    assert parse_chat_stream(sse({"choices": [], "usage": {"prompt_tokens": 1}})) == []


# ----------------------------------------------------------------- the engine on a raw server

HI = [ChatMessage("user", "hi")]


@asynccontextmanager
async def raw_server(
    body: bytes, hold_open: bool = False
) -> AsyncIterator[tuple[str, Callable[[], int]]]:
    """An HTTP/1.1 server that answers every request with ``body`` as one chunked SSE reply.

    ``hold_open`` leaves the body unterminated after it, as a server that sends
    ``[DONE]`` but never ends the response would.
    """
    connections = 0

    async def handler(stream: trio.SocketStream) -> None:
        nonlocal connections
        connections += 1
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                more = await stream.receive_some()
                if not more:
                    return
                data += more
            head, _, data = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(data) < length:
                data += await stream.receive_some()
            data = data[length:]
            start = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            await stream.send_all(start + b"transfer-encoding: chunked\r\n\r\n")
            await stream.send_all(b"%x\r\n%s\r\n" % (len(body), body))
            if hold_open:
                await trio.sleep_forever()
            await stream.send_all(b"0\r\n\r\n")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"http://127.0.0.1:{port}/v1", lambda: connections
        nursery.cancel_scope.cancel()


async def run_engine(url: str, timeout: float = 5.0) -> tuple[list[str], OpenAILLM]:
    tx, rx = trio.open_memory_channel[str](100)
    async with OpenAILLM("sk-test", base_url=url, timeout=timeout) as llm:
        try:
            await llm.stream(HI, tx)
        finally:
            tx.close()
    return [d async for d in rx], llm


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("server_error", LLMErrorKind.NETWORK), ("invalid_request_error", LLMErrorKind.FATAL)],
)
async def test_error_in_the_stream_maps_like_the_sdk(error_type: str, kind: LLMErrorKind) -> None:
    error = {"error": {"message": "boom", "type": error_type}}
    async with raw_server(sse(chunk("Hel")) + sse(error)) as (url, _):
        with pytest.raises(LLMError) as info:
            await run_engine(url)
    assert info.value.kind is kind
    assert "boom" in str(info.value)


async def test_chunk_that_is_not_an_object_is_a_network_error() -> None:
    async with raw_server(sse(chunk("Hel")) + sse("[1, 2]")) as (url, _):
        with pytest.raises(LLMError) as info:
            await run_engine(url)
    assert info.value.kind is LLMErrorKind.NETWORK
    assert "malformed stream" in str(info.value)


async def test_connection_is_reused_after_done() -> None:
    async with raw_server(answer_body(["Hel", "lo"])) as (url, connections):
        tx, rx = trio.open_memory_channel[str](100)
        async with OpenAILLM("sk-test", base_url=url) as llm:
            for _ in range(3):
                await llm.stream(HI, tx)
            assert llm.last_usage == TokenUsage(7, 3, 10)
        tx.close()
        assert [d async for d in rx] == ["Hel", "lo"] * 3
        assert connections() == 1


async def test_server_that_never_ends_the_body_after_done_is_not_an_error() -> None:
    async with raw_server(answer_body(["Hel", "lo"]), hold_open=True) as (url, _):
        with trio.fail_after(2):  # the read timeout is 5 s: the drain gives up first
            deltas, llm = await run_engine(url)
    assert deltas == ["Hel", "lo"]
    assert llm.last_usage == TokenUsage(7, 3, 10)
