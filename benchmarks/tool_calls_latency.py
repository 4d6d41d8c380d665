"""Added first-token latency of declaring tools, on FakeEngine: 3 tools against none.

A real server on 127.0.0.1, streamed `/v1/chat/completions` over one keep-alive httpx connection;
the reply is plain text (no call), so what is measured is the tools' cost before the first token
(validating the schemas, rendering the definitions into the prompt, the parser at the flush point).
Requests alternate between the cases; prints the p50/p90 of each and the p50 differences as JSON. A third
case, no tools but the same prompt (the definitions' text sent as the system message), separates what
the tool machinery costs from what a longer prompt costs (the fake engine's prefix-cache simulation
walks every prompt token).
On a busy machine the end-to-end numbers are noisy, so the script also times, in process, the work a
request with tools adds on the server (body validation, rendering, a parser fed the whole reply).

    .venv/bin/python benchmarks/tool_calls_latency.py [ROUNDS]
"""

from __future__ import annotations

import asyncio
import json
import socket
import statistics
import sys
import time
from typing import Any

import httpx

from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine, Sampling
from yap_engines.chat import render_ids
from yap_engines.function_tools import tool_messages
from yap_engines.settings import EngineSettings
from yap_engines.tool_calls import detect_parser, template_renders_tools
from yap_server.app import create_app
from yap_server.openai.request import parse_chat_body
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


def server_work_s(body: dict[str, Any], tokenizer: Any, reply: str) -> float:
    """The server's own work for one request (what `_prepare` and the flush-point parser do)."""
    started = time.perf_counter()
    call = parse_chat_body(body, Sampling(max_tokens=150, max_tokens_limit=150))
    messages, kwargs = call.messages, call.template_kwargs
    parser = None
    if call.tools is not None and call.tools.active:
        rendered = tool_messages(messages, call.tools, native=template_renders_tools(tokenizer))
        messages, kwargs = rendered.messages, {**rendered.template_kwargs, **kwargs}
        parser = call.tools.parser(detect_parser(tokenizer), tokenizer)
    render_ids(tokenizer, messages, **kwargs)
    if parser is not None:
        for word in reply.split(" "):
            parser.feed(word + " ")
        parser.finish()
    return time.perf_counter() - started


async def main(rounds: int) -> dict[str, Any]:
    engine = FakeEngine(text="It is sunny in Paris today, with a light breeze.", model_id="m")
    settings = ServerSettings(text_api_key=KEY, max_concurrent_connections=8, deploy_mode="chat")
    app = create_app(settings, engines={"chat": engine}, engine_settings=EngineSettings())
    plain: list[float] = []
    tools: list[float] = []
    sized: list[float] = []  # no tools, the same prompt: the definitions' text sent as the system message
    # TCP_NODELAY: without it a body over ~1 KB waits on Nagle's algorithm and the server's delayed ACK,
    # which costs any large request (tools or a long system prompt alike) ~10 ms on loopback.
    transport = httpx.AsyncHTTPTransport(socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with serve_on_loopback(app) as port, httpx.AsyncClient(timeout=30, transport=transport) as http:
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        base = {"model": "m", "messages": MESSAGES, "stream": True, "temperature": 0}
        with_tools = {**base, "tools": TOOLS}
        toolset = parse_chat_body(with_tools, Sampling()).tools
        assert toolset is not None
        same_prompt = tool_messages(MESSAGES, toolset, native=False).messages
        padded = {**base, "messages": same_prompt}
        for _ in range(20):  # warm up every path
            for body in (base, with_tools, padded):
                await first_token_s(http, url, body)
        for _ in range(rounds):
            plain.append(await first_token_s(http, url, base))
            tools.append(await first_token_s(http, url, with_tools))
            sized.append(await first_token_s(http, url, padded))
    reply = "It is sunny in Paris today, with a light breeze."
    base_body = {"model": "m", "messages": MESSAGES}
    work_plain, work_tools = [], []
    for _ in range(rounds):
        work_plain.append(server_work_s(base_body, engine.tokenizer, reply))
        work_tools.append(server_work_s({**base_body, "tools": TOOLS}, engine.tokenizer, reply))
    return {
        "server_work_no_tools_p50_ms": round(1000 * statistics.median(work_plain), 3),
        "server_work_three_tools_p50_ms": round(1000 * statistics.median(work_tools), 3),
        "server_work_added_p50_ms": round(1000 * (statistics.median(work_tools) - statistics.median(work_plain)), 3),
        "engine": "fake",
        "rounds": rounds,
        "no_tools": summary(plain),
        "three_tools": summary(tools),
        "no_tools_same_prompt": summary(sized),
        "added_p50_ms": round(1000 * (statistics.median(tools) - statistics.median(plain)), 3),
        "added_p50_ms_vs_same_prompt": round(1000 * (statistics.median(tools) - statistics.median(sized)), 3),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 300))))
