"""Single-stream engine benchmark: start-up time, time to first token and decode speed.

`yap bench stream` runs it; it prints one JSON object. EOS is banned (where the engine has a
tokenizer) so every request streams exactly `max_tokens` tokens.
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from yap_engines.chat import render_ids
from yap_engines.registry import load_engine
from yap_engines.settings import EngineSettings
from yap_engines.types import ChatRequest, Sampling
from yap_server.stats import percentiles


@dataclass(frozen=True)
class StreamBench:
    engine: str
    model: str
    startup_s: float
    requests: int
    max_tokens: int
    ttft_ms_p50: float
    ttft_ms_max: float
    tokens_per_s_p50: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def bench_stream(settings: EngineSettings, *, requests: int = 10, max_tokens: int = 128) -> StreamBench:
    """Start the engine from `settings`, then time `requests` sequential streams of `max_tokens` tokens."""
    started = time.perf_counter()
    engine = load_engine(settings=settings)
    startup = time.perf_counter() - started
    tokenizer = getattr(engine, "tokenizer", None)
    try:
        ttfts, rates = [], []
        for i in range(requests):
            messages = [
                {"role": "system", "content": "You are a brief voice assistant."},
                {"role": "user", "content": f"Question number {i}: what is on my screen?"},
            ]
            prompt = render_ids(tokenizer, messages) if tokenizer is not None else [1, 2, 3]
            bias = {tokenizer.eos_token_id: -100.0} if tokenizer is not None else None
            request = ChatRequest(
                f"bench-{uuid.uuid4().hex}", prompt, Sampling(max_tokens=max_tokens, seed=i, logit_bias=bias)
            )
            sent = time.perf_counter()
            first = None
            completion = 0
            async for delta in engine.generate(request):
                if first is None and delta.text:
                    first = time.perf_counter()
                if delta.usage is not None:
                    completion = delta.usage.completion_tokens
            done = time.perf_counter()
            first = first or done
            ttfts.append((first - sent) * 1000)
            rates.append(completion / (done - sent))
    finally:
        await engine.aclose()
    return StreamBench(
        engine=settings.engine,
        model=settings.resolved_model(),
        startup_s=round(startup, 2),
        requests=requests,
        max_tokens=max_tokens,
        ttft_ms_p50=round(statistics.median(ttfts), 2),
        ttft_ms_max=round(max(ttfts), 2),
        tokens_per_s_p50=round(statistics.median(rates), 1),
    )


async def bench_tool(model: str, *, concurrencies: tuple[int, ...] = (1, 16), rounds: int = 20) -> dict[str, Any]:
    """Tool classifier latency p50/p95/p99 and throughput at each concurrency, with micro-batching and
    without it, on conversation steps with their earlier turns (`TOOL_HISTORY_TOKENS` of them reach the model)."""
    import random
    import time

    from yap_engines.demo.tool_conversations import conversations
    from yap_engines.demo.tool_data import training_examples
    from yap_engines.tool import ToolClassifier, ToolSettings

    steps = [(list(s.history), s.utterance) for c in conversations(training_examples(), count=200) for s in c]
    random.Random(0).shuffle(steps)
    base = ToolClassifier.load(model, ToolSettings.from_env(tool_device="auto"))
    report: dict[str, Any] = {"model": model, "history_tokens": base.history_budget}
    try:
        for history, text in steps[:8]:  # warm-up: the first forward passes pay one-time start-up costs
            await base.classify(history, text)
        for label, overrides in (
            ("batched", {"tool_max_batch": 16, "tool_batch_window_ms": 3.0}),
            ("unbatched", {"tool_max_batch": 1, "tool_batch_window_ms": 0.0}),
        ):
            settings = ToolSettings.from_env(**{**base.settings.model_dump(), **overrides, "tool_timeout_s": 60.0})
            tool = ToolClassifier(base.model, base.tokenizer, settings, model_id=model)
            for level in concurrencies:
                latencies: list[float] = []
                started = time.perf_counter()
                for r in range(rounds):
                    batch = [steps[(r * level + i) % len(steps)] for i in range(level)]
                    decisions = await asyncio.gather(*(tool.classify(h, t) for h, t in batch))
                    latencies += [d.latency_ms for d in decisions]
                elapsed = time.perf_counter() - started
                cuts = percentiles(latencies, digits=2)
                report[f"{label}_c{level}"] = {
                    **{f"{point}_ms": value for point, value in cuts.items()},
                    "per_s": round(len(latencies) / elapsed, 1),
                    "batches": tool.batches_run,
                }
                tool.batches_run = 0
            await tool.aclose()
    finally:
        await base.aclose()
    return report
