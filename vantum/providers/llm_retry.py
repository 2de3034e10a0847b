"""Retry a streamed LLM answer, and what to say when it cannot be had.

A retry is only safe before the first delta: once text has gone downstream it
may already be spoken, and a second attempt would repeat it. So the stream runs
through a rendezvous channel that notices the first delta; after it, errors are
re-raised as they are.

When the answer fails for good the caller speaks a fallback instead of going
silent. The wording escalates with consecutive failures, and jumps straight to
the last tier when retrying cannot help (bad key, fatal request error).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import attrs
import trio

from ..errors import LLMError, LLMErrorKind
from .base import NO_CALLS, NO_TOOLS, ChatMessage, LLMEngine, ToolCall, ToolSchema
from .reporting import report

log = logging.getLogger("vantum.llm")


async def stream_with_retry(
    engine: LLMEngine,
    messages: Sequence[ChatMessage],
    out: trio.MemorySendChannel[str],
    *,
    max_attempts: int = 3,
    base_delay: float = 0.25,
    max_delay: float = 4.0,
    tools: Sequence[ToolSchema] = NO_TOOLS,
    said: list[str] | None = None,
) -> Sequence[ToolCall]:
    """Stream ``engine``'s answer into ``out``, retrying transient failures before any text.

    Returns the tool calls of the attempt that succeeded. ``said``, when given,
    collects the deltas too (a tool round records what was said before its calls);
    without it the relay loop is exactly the one a plain answer always ran.

    The delay before attempt ``n + 1`` is ``base_delay * 2 ** (n - 1)``, or the
    server's ``retry_after`` when it gave one, capped at ``max_delay`` either way:
    a caller on the line will not wait for a long rate-limit window. Does not close
    ``out``. Raises the last :class:`LLMError` when attempts run out.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    for attempt in range(1, max_attempts + 1):
        emitted, error, calls = await _attempt(engine, messages, out, tools, said)
        if error is None:
            return calls
        if emitted or not error.kind.retryable or attempt == max_attempts:
            raise error
        delay = retry_delay(attempt, error.retry_after, base_delay=base_delay, max_delay=max_delay)
        log.info(
            "%s: %s (attempt %d/%d), retrying in %.2fs",
            engine.name,
            error.kind.value,
            attempt,
            max_attempts,
            delay,
        )
        await trio.sleep(delay)
    raise AssertionError("unreachable: the last attempt returns or raises")


def retry_delay(
    attempt: int, retry_after: float | None, *, base_delay: float, max_delay: float
) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
    delay = base_delay * 2 ** (attempt - 1) if retry_after is None else retry_after
    return min(max_delay, max(0.0, delay))


async def _attempt(
    engine: LLMEngine,
    messages: Sequence[ChatMessage],
    out: trio.MemorySendChannel[str],
    tools: Sequence[ToolSchema],
    said: list[str] | None = None,
) -> tuple[bool, LLMError | None, Sequence[ToolCall]]:
    """Run one stream; return whether any delta went to ``out``, the LLMError, if any,
    and the tool calls.

    Errors are caught inside the tasks that raise them so the caller sees a plain
    LLMError (or a plain channel error from ``out``), not an exception group.
    """
    emitted = False
    error: LLMError | None = None
    calls: Sequence[ToolCall] = NO_CALLS
    broken: trio.BrokenResourceError | trio.ClosedResourceError | None = None
    relay_tx, relay_rx = trio.open_memory_channel[str](0)

    async def produce() -> None:
        nonlocal error, calls
        async with relay_tx:
            try:
                calls = await engine.stream(messages, relay_tx, tools)
            except LLMError as exc:
                report(engine.name, exc.kind.value)
                error = exc

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce)
        async with relay_rx:
            async for delta in relay_rx:
                emitted = True
                if said is not None:
                    said.append(delta)
                try:
                    await out.send(delta)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    broken = exc
                    nursery.cancel_scope.cancel()
                    break
    if broken is not None:
        raise broken
    return emitted, error, calls


def fallback_tier(kind: LLMErrorKind, consecutive_failures: int) -> int:
    """1 for a first transient failure, 2 when they repeat, 3 when it looks persistent."""
    if kind in (LLMErrorKind.AUTH, LLMErrorKind.FATAL) or consecutive_failures >= 3:
        return 3
    return 2 if consecutive_failures == 2 else 1


@attrs.define
class FallbackMessages:
    """Spoken fallbacks for one session; counts failed answers since the last success."""

    tier1: str = "Sorry, something went wrong on my side. Could you say it again?"
    """Said for any first failure (a rate limit or a dropped stream as much as a bad answer),
    so it must not blame the caller's audio."""
    tier2: str = (
        "Sorry, I'm having a little trouble answering. Could you give me a moment and ask again?"
    )
    tier3: str = (
        "I'm having technical trouble right now. Please try again in a little while, "
        "or call back later."
    )
    consecutive_failures: int = 0

    def message_for(self, kind: LLMErrorKind) -> str:
        """Record one failed answer and return the text to speak instead."""
        self.consecutive_failures += 1
        tier = fallback_tier(kind, self.consecutive_failures)
        return (self.tier1, self.tier2, self.tier3)[tier - 1]

    def success(self) -> None:
        """An answer came through: the next failure is a first failure again."""
        self.consecutive_failures = 0


__all__ = ["FallbackMessages", "fallback_tier", "retry_delay", "stream_with_retry"]
