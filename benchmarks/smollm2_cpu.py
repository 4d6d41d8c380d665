"""First-token latency and decode speed of the embedded default (SmolLM2-135M-Instruct) on vLLM.

Four cases, greedy, 48 tokens each with EOS banned so every reply has the same length:
a short prompt (28 tokens) seen for the first time (cold) and again (warm: median of 3), and a
~1,000-token persona seen for the first time (cold, nothing cached) and then with three other user
lines after it (warm: the persona's whole KV blocks come from the prefix cache). Prints one JSON line.

    .venv/bin/python benchmarks/smollm2_cpu.py [MODEL_DIR] ['{"dtype": "float32"}']

The second argument overrides `EngineSettings` fields; vLLM's own variables (`VLLM_CPU_KVCACHE_SPACE`,
`VLLM_CPU_OMP_THREADS_BIND`, ...) come from the environment and are echoed in the report.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from typing import Any

from yap_engines import ChatRequest, Sampling, load_engine
from yap_engines.chat import render_ids

PERSONA_RULES = (
    "You are Sarah, a warm and patient voice assistant who lives in a small coastal town.",
    "You love gardening, especially tomatoes, basil and sunflowers, and you talk about them fondly.",
    "You answer in one or two short sentences, because your words are spoken aloud.",
    "You never use lists, markdown, emojis or code blocks; you speak in plain friendly sentences.",
    "You grew up near the sea and you like to compare things to waves, tides and boats.",
    "When you do not know something you say so honestly and suggest where to look.",
    "You remember what the user told you earlier in the conversation and refer back to it.",
    "You enjoy cooking simple meals: soups, fresh bread, grilled fish and lemon cake.",
    "Your favourite season is autumn, when the light turns golden and the air smells of leaves.",
    "You keep a calm tone even when the user is upset, and you acknowledge their feelings first.",
)


def persona(tokenizer: Any, target: int = 1000) -> str:
    """Numbered persona rules, as many as fit in `target` tokens."""
    lines: list[str] = []
    while True:
        candidate = [*lines, f"Rule {len(lines) + 1}: {PERSONA_RULES[len(lines) % len(PERSONA_RULES)]}"]
        if len(tokenizer.encode("\n".join(candidate), add_special_tokens=False)) > target:
            return "\n".join(lines)
        lines = candidate


async def timed(engine: Any, prompt: list[int], bias: dict[int, float]) -> dict[str, float]:
    request = ChatRequest(
        f"bench-{uuid.uuid4().hex}", prompt, Sampling(max_tokens=48, temperature=0.0, logit_bias=bias)
    )
    sent = time.perf_counter()
    first = None
    usage = None
    async for delta in engine.generate(request):
        if first is None and delta.text:
            first = time.perf_counter()
        usage = delta.usage or usage
    end = time.perf_counter()
    assert first is not None and usage is not None
    return {
        "ttft_ms": round((first - sent) * 1000, 1),
        "decode_tok_s": round((usage.completion_tokens - 1) / (end - first), 1),
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
    }


def median(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(row[key] for row in rows) for key in rows[0]}


async def main(model: str, fields: dict[str, Any]) -> dict[str, Any]:
    started = time.perf_counter()
    engine = load_engine("vllm", model=model, vllm_max_num_seqs=8, **fields)
    report: dict[str, Any] = {
        "settings": fields,
        "env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_CPU")},
        "startup_s": round(time.perf_counter() - started, 1),
        "load_average_1m": os.getloadavg()[0],
    }
    tokenizer = engine.tokenizer
    bias = {tokenizer.eos_token_id: -100.0}
    try:
        system = {"role": "system", "content": "You are a brief voice assistant."}
        short = render_ids(tokenizer, [system, {"role": "user", "content": "What's the capital of France?"}])
        report["short_cold"] = await timed(engine, short, bias)
        report["short_warm"] = median([await timed(engine, short, bias) for _ in range(3)])
        rules = {"role": "system", "content": persona(tokenizer)}
        opener = render_ids(tokenizer, [rules, {"role": "user", "content": "Hi! How are you today?"}])
        report["persona_cold"] = await timed(engine, opener, bias)
        lines = ("What should I plant this spring?", "What is your favourite season?", "Can you suggest a soup?")
        warm = [
            await timed(engine, render_ids(tokenizer, [rules, {"role": "user", "content": q}]), bias) for q in lines
        ]
        report["persona_warm"] = median(warm)
    finally:
        await engine.aclose()
    return report


if __name__ == "__main__":
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "engines/smollm2-135m-instruct"
    overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(asyncio.run(main(model_dir, overrides))), flush=True)
