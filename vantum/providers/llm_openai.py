"""Any OpenAI-compatible chat completion stream (OpenAI, Azure, vLLM, Ollama, llama.cpp).

The official ``openai`` SDK supplies what it is good at: base URL, auth headers,
the pooled httpx transport, timeouts, and its exception classes for HTTP status
errors. It does not parse the answer: its per-request parameter transform and
its per-chunk pydantic models cost more CPU than the rest of a turn's LLM work,
so the request body is plain JSON sent with the client's raw ``post`` and the
event stream is read by :mod:`vantum.providers.openai_sse`.

The SDK's own retries are switched off (``max_retries=0``): retrying is
:func:`vantum.providers.llm_retry.stream_with_retry`'s job, because only the
caller knows whether text was already spoken. Failures become :class:`LLMError`
with a kind that drives that retry policy and the spoken fallback.
"""

from __future__ import annotations

import email.utils
import math
import ssl
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any

import anyio
import httpx2
import openai
import trio

from ..errors import LLMError, LLMErrorKind
from .base import NO_CALLS, NO_TOOLS, ChatMessage, ToolCall, ToolSchema
from .openai_sse import ChatStreamParser, StreamError, TokenUsage

# What the SDK's own stream maps to APITimeoutError / APIConnectionError mid-body.
_TIMEOUTS = (httpx2.TimeoutException,)
_TRANSPORT_ERRORS = (httpx2.RequestError, ssl.SSLError, anyio.EndOfStream)
_DRAIN_SECONDS = 0.1  # after [DONE], how long to wait for the body's end (keeps the connection)
_BEARER: openai.RequestOptions = {"security": {"bearer_auth": True}}


class OpenAILLM:
    """Streams chat completions; one instance (and HTTP connection pool) per process is fine."""

    name = "openai"

    def __init__(
        self,
        api_key: str,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        *,
        temperature: float = 0.7,
        max_completion_tokens: int | None = 300,
        timeout: float = 30.0,
    ) -> None:
        self.model = model
        self.temperature = temperature
        self.max_completion_tokens = max_completion_tokens
        self.last_usage: TokenUsage | None = None
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = NO_TOOLS,
    ) -> Sequence[ToolCall]:
        """Send content deltas to ``out``, return the tool calls; see :meth:`LLMEngine.stream`.

        The response is closed on every exit, including cancellation, so a
        barge-in frees the connection at once and the server stops generating.
        """
        self.last_usage = None
        try:
            response = await self._client.post(
                "/chat/completions",
                cast_to=httpx2.Response,
                body=self.request_body(messages, tools),
                options=_BEARER,
                stream=True,
            )
            try:
                return await self._read(response, out)
            finally:
                await response.aclose()
        except openai.OpenAIError as exc:
            raise llm_error_from(exc) from exc
        except ValueError as exc:  # MalformedStreamError: not JSON, or not shaped like a chunk
            raise LLMError(
                LLMErrorKind.NETWORK, f"malformed stream from the server: {exc}"
            ) from exc

    def request_body(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSchema] = NO_TOOLS
    ) -> dict[str, Any]:
        """The JSON the SDK would send for these parameters, built without its transform."""
        body: dict[str, Any] = {
            "model": self.model,
            "stream": True,
            "messages": [
                {"role": m.role, "content": m.content}
                if not m.tool_calls and m.tool_call_id is None
                else wire_message(m)
                for m in messages
            ],
        }
        if tools:
            body["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": dict(t.parameters),
                    },
                }
                for t in tools
            ]
        if self.max_completion_tokens is not None:
            body["max_completion_tokens"] = self.max_completion_tokens
        body["stream_options"] = {"include_usage": True}
        body["temperature"] = self.temperature
        return body

    async def _read(
        self, response: httpx2.Response, out: trio.MemorySendChannel[str]
    ) -> Sequence[ToolCall]:
        """Parse the body into ``out``; after ``[DONE]``, drain briefly for connection reuse.

        Returns the tool calls the stream made."""
        parser = ChatStreamParser()
        try:
            with trio.CancelScope() as drain:
                async for piece in response.aiter_bytes():
                    for event in parser.feed(piece):
                        if type(event) is str:
                            await out.send(event)
                        elif isinstance(event, TokenUsage):
                            self.last_usage = event
                        elif isinstance(event, StreamError):
                            raise openai.APIError(event.message, response.request, body=event.body)
                    if parser.done and drain.deadline == math.inf:
                        if response.http_version != "HTTP/1.1":
                            break  # HTTP/2 closes the stream and keeps the connection
                        drain.deadline = trio.current_time() + _DRAIN_SECONDS
        except _TIMEOUTS as exc:
            if not parser.done:
                raise openai.APITimeoutError(request=response.request) from exc
        except _TRANSPORT_ERRORS as exc:
            if not parser.done:  # cleanup after [DONE] must not fail a complete answer
                raise openai.APIConnectionError(request=response.request) from exc
        return parser.tool_calls.calls() if parser.tool_calls else NO_CALLS

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.close()

    async def __aenter__(self) -> OpenAILLM:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


def wire_message(message: ChatMessage) -> dict[str, Any]:
    """A message of a tool round in OpenAI's shape: an assistant message that called
    tools (``content`` null when it said nothing), or a ``tool`` result."""
    if message.tool_call_id is not None:
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    return {
        "role": message.role,
        "content": message.content or None,
        "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in message.tool_calls
        ],
    }


def llm_error_from(exc: openai.OpenAIError) -> LLMError:
    """Classify an SDK exception by whether retrying the same request may help.

    408 and 409 count as transient, like the SDK's own retry rule. A 429 caused by
    an exhausted quota (``insufficient_quota``) is FATAL: waiting will not help.
    """
    message = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, openai.AuthenticationError | openai.PermissionDeniedError):
        return LLMError(LLMErrorKind.AUTH, message)
    if isinstance(exc, openai.RateLimitError):
        if exc.code == "insufficient_quota":
            return LLMError(LLMErrorKind.FATAL, message)
        return LLMError(LLMErrorKind.RATE_LIMIT, message, parse_retry_after(exc.response.headers))
    if isinstance(exc, openai.APIConnectionError | openai.InternalServerError):
        return LLMError(LLMErrorKind.NETWORK, message)
    if isinstance(exc, openai.APIStatusError):
        if exc.status_code in (408, 409) or exc.status_code >= 500:
            return LLMError(LLMErrorKind.NETWORK, message)
        return LLMError(LLMErrorKind.FATAL, message)
    if isinstance(exc, openai.APIError) and exc.type == "server_error":
        return LLMError(LLMErrorKind.NETWORK, message)  # error event in the middle of a stream
    return LLMError(LLMErrorKind.FATAL, message)


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``retry-after`` (seconds or HTTP date)."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        return max(0.0, seconds) if math.isfinite(seconds) else None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


__all__ = [
    "OpenAILLM",
    "TokenUsage",
    "llm_error_from",
    "parse_retry_after",
    "wire_message",
]
