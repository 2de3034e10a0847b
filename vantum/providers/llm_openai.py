"""Any OpenAI-compatible chat completion stream (OpenAI, Azure, vLLM, Ollama, llama.cpp).

The official ``openai`` SDK speaks HTTP through httpx/anyio, so it runs inside
``trio.run`` unchanged. Its own retries are switched off (``max_retries=0``):
retrying is :func:`vantum.providers.llm_retry.stream_with_retry`'s job, because
only the caller knows whether text was already spoken. SDK exceptions become
:class:`LLMError` with a kind that drives that retry policy and the spoken fallback.
"""

from __future__ import annotations

import email.utils
import math
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import cast

import attrs
import openai
import trio
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam

from ..errors import LLMError, LLMErrorKind
from .base import ChatMessage


@attrs.frozen
class TokenUsage:
    """Token counts the server reported for the last answer (for metrics and cost)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


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
        self, messages: Sequence[ChatMessage], out: trio.MemorySendChannel[str]
    ) -> None:
        """Send content deltas to ``out``; see :meth:`LLMEngine.stream`.

        ``async with`` on the SDK stream closes the HTTP response on every exit,
        including cancellation, so a barge-in frees the connection at once and
        the server stops generating.
        """
        self.last_usage = None
        limit = (
            self.max_completion_tokens if self.max_completion_tokens is not None else openai.omit
        )
        try:
            stream = await self._client.chat.completions.create(
                model=self.model,
                messages=to_openai_messages(messages),
                stream=True,
                stream_options={"include_usage": True},
                temperature=self.temperature,
                max_completion_tokens=limit,
            )
            async with stream:
                async for chunk in stream:
                    usage = chunk.usage
                    if isinstance(usage, CompletionUsage):
                        self.last_usage = TokenUsage(
                            usage.prompt_tokens, usage.completion_tokens, usage.total_tokens
                        )
                    for content in chunk_contents(chunk):
                        await out.send(content)
        except openai.OpenAIError as exc:
            raise llm_error_from(exc) from exc
        except ValueError as exc:  # a chunk that is not JSON (JSONDecodeError), or misshapen
            raise LLMError(
                LLMErrorKind.NETWORK, f"malformed stream from the server: {exc}"
            ) from exc

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


def chunk_contents(chunk: ChatCompletionChunk) -> list[str]:
    """The content deltas of one stream chunk; ValueError when it is not shaped like one.

    The SDK builds chunks without validation, so a server sending the wrong shape
    would otherwise surface as an AttributeError deep in the pipeline.
    """
    choices: object = getattr(chunk, "choices", None)
    if not isinstance(choices, list):
        raise ValueError(f"chunk without a choices list: {str(chunk)[:200]}")
    contents = []
    for choice in choices:
        content = getattr(getattr(choice, "delta", None), "content", None)
        if content is not None and not isinstance(content, str):
            raise ValueError(f"chunk with non-text content: {str(chunk)[:200]}")
        if content:
            contents.append(content)
    return contents


def to_openai_messages(messages: Sequence[ChatMessage]) -> list[ChatCompletionMessageParam]:
    return [
        cast(ChatCompletionMessageParam, {"role": m.role, "content": m.content}) for m in messages
    ]


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
    "chunk_contents",
    "llm_error_from",
    "parse_retry_after",
    "to_openai_messages",
]
