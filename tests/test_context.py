"""Conversation context: system prompt first and kept, history bounded."""

from __future__ import annotations

import pytest

from vantum.pipeline.context import DEFAULT_SYSTEM_PROMPT, Conversation
from vantum.providers.base import ChatMessage


def test_system_prompt_comes_first() -> None:
    conversation = Conversation("Be brief.")
    conversation.add_user("hi")
    conversation.add_assistant("hello")
    assert conversation.messages() == [
        ChatMessage("system", "Be brief."),
        ChatMessage("user", "hi"),
        ChatMessage("assistant", "hello"),
    ]


def test_prunes_oldest_and_keeps_system_prompt() -> None:
    conversation = Conversation("sys")
    for i in range(60):
        conversation.add_user(f"q{i}")
        conversation.add_assistant(f"a{i}")
    messages = conversation.messages()
    assert len(conversation) == 50
    assert len(messages) == 51
    assert messages[0] == ChatMessage("system", "sys")
    assert messages[1] == ChatMessage("user", "q35")  # 120 added, newest 50 kept
    assert messages[-1] == ChatMessage("assistant", "a59")


def test_small_budget() -> None:
    conversation = Conversation("sys", max_messages=2)
    for text in ["a", "b", "c"]:
        conversation.add_user(text)
    assert [m.content for m in conversation.messages()] == ["sys", "b", "c"]


def test_clear_keeps_system_prompt() -> None:
    conversation = Conversation("sys")
    conversation.add_user("x")
    conversation.clear()
    assert conversation.messages() == [ChatMessage("system", "sys")]


def test_empty_system_prompt_is_left_out() -> None:
    conversation = Conversation("")
    conversation.add_user("x")
    assert conversation.messages() == [ChatMessage("user", "x")]


def test_default_prompt_asks_for_breaks_and_no_markdown() -> None:
    assert "||BREAK||" in DEFAULT_SYSTEM_PROMPT
    assert "markdown" in DEFAULT_SYSTEM_PROMPT
    assert Conversation().messages()[0].content == DEFAULT_SYSTEM_PROMPT


def test_rejects_empty_budget() -> None:
    with pytest.raises(ValueError):
        Conversation("sys", max_messages=0)
