"""Added first-token latency of declaring tools, on FakeEngine: 3 tools against none.

A real server on 127.0.0.1, streamed `/v1/chat/completions` over one keep-alive httpx connection;
the reply is plain text (no call), so what is measured is the tools' cost before the first token
(validating the schemas, rendering the definitions into the prompt, the parser at the flush point).
Requests alternate between the two cases; prints the p50/p90 of each and the p50 difference as JSON.

    .venv/bin/python benchmarks/tool_calls_latency.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from typing import Any

import httpx

from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine
from yap_engines.settings import EngineSettings
from yap_server.app import create_app
from yap_server.settings import ServerSettings

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from tool_calls_smollm2 import TOOLS  # the benchmark's 3 tools

KEY = "bench-key"
MESSAGES = [{"role": "system", "content": "You are brief."}, {"role": "user", "content": "What's the weather?"}]


async def first_token_s(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    async with http.stream("POST", url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as response:
        lines = response.aiter_lines()
        async for line in lines:
            if line.startswith("data:") and '"content":"' in line and '"content":""' not in line:
                elapsed = time.perf_counter() - started
                async for _ in lines:
                    pass
                return elapsed
    raise RuntimeError("no content chunk")


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(1000 * statistics.median(ordered), 3),
        "p90_ms": round(1000 * ordered[int(0.9 * (len(ordered) - 1))], 3),
    }


async def main(rounds: int) -> dict[str, Any]:
    engine = FakeEngine(text="It is sunny in Paris today, with a light breeze.", model_id="m")
    settings = ServerSettings(text_api_key=KEY, max_concurrent_connections=8, deploy_mode="chat")
    app = create_app(settings, engines={"chat": engine}, engine_settings=EngineSettings())
    plain: list[float] = []
    tools: list[float] = []
    async with serve_on_loopback(app) as port, httpx.AsyncClient(timeout=30) as http:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        base = {"model": "m", "messages": MESSAGES, "stream": True, "temperature": 0}
        for _ in range(20):  # warm up both paths
            await first_token_s(http, url, base)
            await first_token_s(http, url, {**base, "tools": TOOLS})
        for _ in range(rounds):
            plain.append(await first_token_s(http, url, base))
            tools.append(await first_token_s(http, url, {**base, "tools": TOOLS}))
    return {
        "engine": "fake",
        "rounds": rounds,
        "no_tools": summary(plain),
        "three_tools": summary(tools),
        "added_p50_ms": round(1000 * (statistics.median(tools) - statistics.median(plain)), 3),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))))
