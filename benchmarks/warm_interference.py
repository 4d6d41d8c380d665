"""Do warms for other sessions slow the replies that stream? Inter-token gaps of 16 streams, without and with warms.

16 greedy streams of `TOKENS` tokens each on one vLLM engine (the embedded SmolLM2 unless a model dir is
given); the same again while other sessions warm through the engine's `prefill` every 300 ms (a word of
speech), each warm superseding the one before:

- `talking`: four other sessions, each with its own ~1,000-token persona, take turns sending a growing
  interim transcript (its persona is computed once, then each warm adds a word);
- `new_sessions` (the worst case): every warm is a new, uncached ~1,000-token persona.

Prints one JSON line: the p50/p99 gap between deltas in each run and the p99's rise.

    .venv/bin/python benchmarks/warm_interference.py [MODEL_DIR] ['{"vllm_scheduling_policy": "priority"}']
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from yap_engines import ChatRequest, Sampling, load_engine
from yap_engines.chat import render_ids
from yap_server.stats import percentiles

STREAMS = 16
TOKENS = 48
WARM_EVERY_S = 0.3


async def stream(engine: Any, ids: list[int], bias: dict[int, float], gaps: list[float]) -> None:
    request = ChatRequest(f"s-{uuid.uuid4().hex}", ids, Sampling(temperature=0.0, max_tokens=TOKENS, logit_bias=bias))
    last = None
    async for _ in engine.generate(request):
        now = time.perf_counter()
        if last is not None:
            gaps.append(now - last)
        last = now


PERSONA = "You are a kind, brief voice assistant for a busy family. " * 80
WORDS = "could you please tell me what the weather will be like in Austin tomorrow morning".split()


async def warms(engine: Any, tokenizer: Any, stop: asyncio.Event, mode: str) -> int:
    personas = [f"{uuid.uuid4().hex} {PERSONA}" for _ in range(4)]
    count = 0
    while not stop.is_set():
        if mode == "new_sessions":
            messages = [{"role": "system", "content": f"{uuid.uuid4().hex} {PERSONA}"}]
        else:
            said = " ".join(WORDS[: 1 + (count // len(personas)) % len(WORDS)])
            messages = [
                {"role": "system", "content": personas[count % len(personas)]},
                {"role": "user", "content": said},
            ]
        ids = render_ids(tokenizer, messages, add_generation_prompt=False)
        task = asyncio.create_task(engine.prefill(ChatRequest(f"w-{uuid.uuid4().hex}", ids)))
        try:
            await asyncio.wait_for(stop.wait(), WARM_EVERY_S)
        except TimeoutError:
            pass
        task.cancel()  # superseded, as the next interim transcript would
        await asyncio.gather(task, return_exceptions=True)
        count += 1
    return count


async def run(engine: Any, mode: str | None) -> dict[str, Any]:
    tokenizer = engine.tokenizer
    bias = {int(tokenizer.eos_token_id): -100.0}
    prompts = [
        render_ids(tokenizer, [{"role": "user", "content": f"Tell me a story about a cat number {i}."}])
        for i in range(STREAMS)
    ]
    gaps: list[float] = []
    stop = asyncio.Event()
    warming = asyncio.create_task(warms(engine, tokenizer, stop, mode)) if mode else None
    await asyncio.gather(*(stream(engine, ids, bias, gaps) for ids in prompts))
    stop.set()
    warmed = await warming if warming is not None else 0
    p = percentiles([g * 1000 for g in gaps], (50, 99), digits=1)
    return {"gap_ms_p50": p["p50"], "gap_ms_p99": p["p99"], "warms": warmed}


async def main(model: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    engine = load_engine("vllm", **({"model": model} if model else {}), vllm_max_num_seqs=32, **fields)
    try:
        await run(engine, None)  # first pass: compile and cache the stream prompts for every run alike
        report: dict[str, Any] = {"settings": fields, "without_warms": await run(engine, None)}
        for mode in ("talking", "new_sessions"):
            result = await run(engine, mode)
            result["p99_rise_percent"] = round(
                (result["gap_ms_p99"] / report["without_warms"]["gap_ms_p99"] - 1) * 100, 1
            )
            report[mode] = result
    finally:
        await engine.aclose()
    report["load_average_1m"] = os.getloadavg()[0]
    return report


if __name__ == "__main__":
    model_dir = sys.argv[1] if len(sys.argv) > 1 else None
    overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(asyncio.run(main(model_dir, overrides))))
