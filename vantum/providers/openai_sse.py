"""Sans-I/O parser for an OpenAI chat completion stream (server-sent events).

The SDK turns every chunk into a pydantic model and every request into a
transformed ``TypedDict``; for a voice answer of a few dozen ~4-character deltas
that was most of the client's CPU. This parser reads the same wire format with
``json.loads`` and a few dict lookups: feed it body bytes as they arrive, in
pieces of any size, and it yields what a speaking pipeline needs.

Tool calls (``delta.tool_calls``) are not events: they are complete only at the
end, so the parser joins them in :attr:`ChatStreamParser.tool_calls`.

Events, in stream order: ``str`` (a non-empty content delta), :class:`TokenUsage`
(the final usage chunk) and :class:`StreamError` (an ``{"error": ...}`` object the
server sent instead of a chunk, after which the parser stops, as the SDK does).
``data: [DONE]`` sets :attr:`ChatStreamParser.done`; bytes after it are ignored.
Data that is not JSON, or a chunk not shaped like one, raises
:class:`MalformedStreamError` at that event, after the deltas before it.

Decoding follows the SSE rules the SDK follows: lines end with LF, CRLF or CR;
``data:`` lines accumulate (joined by LF) until a blank line dispatches them;
comments and other fields (``event``, ``id``, ``retry``) carry nothing a chat
stream needs. Unlike the SDK, an event without data (a keep-alive such as
``event: ping``) is skipped, as the SSE specification says, not a JSON error.
An event cut off by the end of the body is dropped, also per the specification.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping

import attrs

from .tool_calls import MalformedToolCall, ToolCallAccumulator


@attrs.frozen
class TokenUsage:
    """Token counts the server reported for the last answer (for metrics and cost)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


@attrs.frozen
class StreamError:
    """An error object sent inside the stream (``data: {"error": {...}}``)."""

    message: str
    body: object
    """The ``error`` value as sent, for :class:`openai.APIError` (its ``type`` and ``code``)."""


class MalformedStreamError(ValueError):
    """The server sent data that is not a chat completion chunk."""


ChatStreamEvent = str | TokenUsage | StreamError

_DEFAULT_ERROR_MESSAGE = "An error occurred during streaming"


class ChatStreamParser:
    """Byte pieces in, chat stream events out; one parser per response body."""

    def __init__(self) -> None:
        self._tail = b""  # an unterminated line
        self._skip_lf = False  # the last piece ended in CR: a leading LF is its CRLF
        self._data: list[bytes] = []  # data lines of the event being read
        self.tool_calls = ToolCallAccumulator()
        """``tool_calls`` deltas, joined by index; read :meth:`ToolCallAccumulator.calls`
        once the stream is over."""
        self.done = False
        """True once ``[DONE]`` or an error object arrived; later bytes are ignored."""

    def feed(self, piece: bytes) -> Iterator[ChatStreamEvent]:
        """Events completed by ``piece``; raises :class:`MalformedStreamError` lazily."""
        if self.done:
            return
        for line in self._lines(piece):
            if self.done:
                return
            if line.startswith(b"data:"):
                value = line[5:]
                self._data.append(value[1:] if value.startswith(b" ") else value)
            elif not line:
                if self._data:
                    data = b"\n".join(self._data)
                    self._data = []
                    yield from self._event(data)
            elif line == b"data":
                self._data.append(b"")
            # Anything else is a comment or a field a chat stream does not use.

    def _lines(self, piece: bytes) -> list[bytes]:
        if not piece:
            return []
        if self._skip_lf:
            self._skip_lf = False
            if piece.startswith(b"\n"):
                piece = piece[1:]
        buffer = self._tail + piece if self._tail else piece
        if b"\r" in buffer:
            self._skip_lf = buffer.endswith(b"\r")
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._tail = lines.pop()
        return lines

    def _event(self, data: bytes) -> Iterator[ChatStreamEvent]:
        if data.startswith(b"[DONE]"):
            self.done = True
            return
        try:
            chunk = json.loads(data.decode("utf-8"))
        except ValueError as exc:
            raise MalformedStreamError(f"data that is not JSON ({exc}): {data[:200]!r}") from exc
        if not isinstance(chunk, dict):
            raise MalformedStreamError(f"data that is not a JSON object: {data[:200]!r}")
        error = chunk.get("error")
        if error:
            self.done = True
            message = error.get("message") if isinstance(error, dict) else None
            if not message or not isinstance(message, str):
                message = _DEFAULT_ERROR_MESSAGE
            yield StreamError(message, error)
            return
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            counts = usage_counts(usage)
            if counts is not None:
                yield counts
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise MalformedStreamError(f"chunk without a choices list: {data[:200]!r}")
        for choice in choices:
            delta = choice.get("delta") if isinstance(choice, dict) else None
            content = delta.get("content") if isinstance(delta, dict) else None
            if not content:
                # Only a chunk without text is looked at for tool calls, so a text
                # answer pays nothing for them.
                calls = delta.get("tool_calls") if isinstance(delta, dict) else None
                if calls is not None:
                    try:
                        self.tool_calls.feed(calls)
                    except MalformedToolCall as exc:
                        raise MalformedStreamError(f"{exc}: {data[:200]!r}") from exc
                if content is None:
                    continue
            if not isinstance(content, str):
                raise MalformedStreamError(f"chunk with non-text content: {data[:200]!r}")
            if content:
                yield content


def usage_counts(usage: Mapping[str, object]) -> TokenUsage | None:
    """The usage object's counts, or None when one is missing or not an integer.

    Metrics are not worth failing an answer whose text is already out.
    """
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    total = usage.get("total_tokens")
    if type(prompt) is int and type(completion) is int and type(total) is int:
        return TokenUsage(prompt, completion, total)
    return None


def parse_chat_stream(body: bytes) -> list[ChatStreamEvent]:
    """All events of a complete body (for tests and one-shot use)."""
    return list(ChatStreamParser().feed(body))


__all__ = [
    "ChatStreamEvent",
    "ChatStreamParser",
    "MalformedStreamError",
    "StreamError",
    "TokenUsage",
    "parse_chat_stream",
    "usage_counts",
]
