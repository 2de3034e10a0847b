"""Time to first token of the offline LLM with and without the KV cache kept across
turns (issue 17).

A three-turn chat, run with the cache cleared per answer (cyllama's own behaviour)
and with the shared prompt prefix kept (the engine's), alternating, ``--rounds``
times. Prints per turn the tokens evaluated before the first token, and the time to
first token in wall and process CPU time (CPU says more on a loaded machine).

    .venv/bin/python benchmarks/llm_ttft.py [--rounds 2]
"""

from __future__ import annotations

import argparse
import time

import trio

from vantum.providers.base import ChatMessage
from vantum.providers.cyllama_llm import CyllamaLLM
from vantum.providers.prompts import DEFAULT_SYSTEM_PROMPT

QUESTIONS = (
    "What is the capital of France?",
    "And what about Germany?",
    "How many people live there?",
)


async def ask(llm: CyllamaLLM, messages: list[ChatMessage]) -> tuple[str, float, float]:
    tx, rx = trio.open_memory_channel[str](1000)
    t0, c0 = time.perf_counter(), time.process_time()
    wall = cpu = 0.0
    out: list[str] = []
    async with trio.open_nursery() as nursery:

        async def generate() -> None:
            async with tx:
                await llm.stream(messages, tx)

        nursery.start_soon(generate)
        async for delta in rx:
            if not out:
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            out.append(delta)
    return "".join(out), wall, cpu


async def main(rounds: int) -> None:
    llm = CyllamaLLM()
    await llm.preload()
    model = llm._model()
    for _ in range(rounds):
        for reuse in (False, True):
            model.reuse_prefix = reuse
            messages = [ChatMessage("system", DEFAULT_SYSTEM_PROMPT)]
            for question in QUESTIONS:
                messages.append(ChatMessage("user", question))
                answer, wall, cpu = await ask(llm, messages)
                print(
                    f"reuse={reuse!s:5} evaluated={model.last_prefill_tokens:4d} "
                    f"ttft wall {wall:5.2f} s cpu {cpu:5.2f} s  {question} -> {answer[:50]!r}",
                    flush=True,
                )
                messages.append(ChatMessage("assistant", answer))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=2)
    trio.run(main, ap.parse_args().rounds)
