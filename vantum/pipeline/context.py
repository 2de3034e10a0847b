"""The conversation a session keeps for its LLM, bounded so long calls stay cheap.

A phone call can last an hour; sending every turn back to the model would grow
latency and cost without bound. The history keeps the newest ``max_messages``
user/assistant messages; the system prompt is outside that budget and always
goes first, because it is what makes answers speakable.
"""

from __future__ import annotations

from collections import deque

from ..providers.base import ChatMessage
from ..providers.prompts import DEFAULT_SYSTEM_PROMPT

__all__ = ["DEFAULT_SYSTEM_PROMPT", "Conversation"]


class Conversation:
    """System prompt plus the newest ``max_messages`` user and assistant messages."""

    def __init__(self, system_prompt: str = DEFAULT_SYSTEM_PROMPT, max_messages: int = 50) -> None:
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        self.system_prompt = system_prompt
        self.max_messages = max_messages
        self._history: deque[ChatMessage] = deque(maxlen=max_messages)

    def add_user(self, text: str) -> None:
        self._history.append(ChatMessage("user", text))

    def add(self, message: ChatMessage) -> None:
        """Any message (a tool round: the assistant's calls and their results)."""
        self._history.append(message)

    def add_assistant(self, text: str) -> None:
        """Record what the assistant said (after barge-in: only what was heard)."""
        self._history.append(ChatMessage("assistant", text))

    def messages(self) -> list[ChatMessage]:
        """What to send to the model: the system prompt first, then the history."""
        system = [ChatMessage("system", self.system_prompt)] if self.system_prompt else []
        history = self._history
        if history and (history[0].role == "tool" or history[0].tool_calls):
            # The bound cut a tool round in two: results without their call are
            # refused by the API, so the remains of that round go too.
            rest = list(history)
            while rest and (rest[0].role == "tool" or rest[0].tool_calls):
                rest.pop(0)
            return [*system, *rest]
        return [*system, *history]

    def clear(self) -> None:
        self._history.clear()

    def __len__(self) -> int:
        """Number of history messages (the system prompt is not counted)."""
        return len(self._history)
