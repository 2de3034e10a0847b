"""A small scripted judge set for the offline LLM (issue 17).

Each prompt has words a good spoken answer contains (any of them) and things it must
not contain (markdown, the ``||BREAK||`` marker, code). Prints pass/fail per prompt,
time to first token and tokens per second, with the short offline system prompt and
with the session's default one (time to first token with and without).

    .venv/bin/python benchmarks/llm_judge.py [--json benchmarks/results/llm_judge.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import trio

from vantum.pipeline.context import DEFAULT_SYSTEM_PROMPT
from vantum.providers.base import ChatMessage
from vantum.providers.cyllama_llm import OFFLINE_SYSTEM_PROMPT, CyllamaLLM

JUDGE = (
    ("What is the capital of France?", ("paris",)),
    ("Hi, who am I talking to?", ("vantum", "assistant")),
    ("How many days are there in a week?", ("seven", "7")),
    ("Can you book me a table for two tonight?", ("time", "restaurant", "book", "where")),
    ("What should I do if I have a headache?", ("water", "rest", "doctor", "pain")),
    ("Thank you, goodbye!", ("bye", "welcome", "day")),
    ("What is two plus three?", ("five", "5")),
    ("Tell me a fun fact about the moon.", ("moon",)),
)
BANNED = ("||BREAK||", "*", "#", "```", "http")


async def ask(llm: CyllamaLLM, system: str, question: str) -> tuple[str, float, float, int]:
    tx, rx = trio.open_memory_channel[str](1000)
    t0 = time.perf_counter()
    first = 0.0
    deltas: list[str] = []
    async with trio.open_nursery() as nursery:

        async def gen() -> None:
            async with tx:
                await llm.stream([ChatMessage("system", system), ChatMessage("user", question)], tx)

        nursery.start_soon(gen)
        async for d in rx:
            if not deltas:
                first = time.perf_counter() - t0
            deltas.append(d)
    return "".join(deltas), first, time.perf_counter() - t0, len(deltas)


async def main(out: str | None) -> dict[str, object]:
    llm = CyllamaLLM()
    await llm.preload()
    results: dict[str, object] = {}
    # DEFAULT_SYSTEM_PROMPT is swapped for the offline one by the engine itself; an
    # agent-like long prompt measures what a 159-token prompt costs.
    long_prompt = DEFAULT_SYSTEM_PROMPT.replace("voice assistant", "voice assistant (agent)")
    for label, system in (("offline", OFFLINE_SYSTEM_PROMPT), ("long", long_prompt)):
        passed = 0
        ttft: list[float] = []
        rates: list[float] = []
        for question, good in JUDGE:
            answer, first, total, n = await ask(llm, system, question)
            ok = any(g in answer.lower() for g in good) and not any(b in answer for b in BANNED)
            passed += ok
            ttft.append(first)
            if total > first:
                rates.append(n / (total - first))
            print(f"[{label}] {'PASS' if ok else 'FAIL'} {first:5.2f}s  {question} -> {answer!r}")
        results[label] = {
            "passed": passed,
            "of": len(JUDGE),
            "ttft_s_median": round(statistics.median(ttft), 2),
            "tokens_per_s_median": round(statistics.median(rates), 1) if rates else None,
        }
        print(label, results[label], flush=True)
    return results


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    args = ap.parse_args()
    results = trio.run(main, args.json)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
