"""Do warms for other sessions slow the replies that stream? Inter-token gaps of 16 `/ws` streams, with and without.

One vLLM engine (the embedded SmolLM2 unless a model dir is given) behind Yap's server on 127.0.0.1; every
client is a real `/ws` session (the `websockets` client, in this process). Two runs, identical but for
the warms:

- 16 streaming sessions each ask for a story: greedy, `TOKENS` tokens, EOS banned, a frame per token
  (`STREAM_FLUSH_MS=0`). Their gaps between `token` frames are the figure.
- once every stream has its first token, `TALKERS` other sessions talk, one after another: each starts with its own
  ~1,000-token persona, then says `WORDS`, a word every 300 ms, sends the final `message` and reads
  its short reply, and talks again until the streams are done.
- `without_warms`: the talkers' interim transcripts are ignored (no `prefill` frames, no warm after
  `start`); `with_warms`: each interim transcript is sent as `prefill`, and `start` warms the persona.
  Both runs pay the same final prompts (each persona is computed once in either run: by its warm, or by
  the first message), so the only difference is the warms. Each run has its own personas (no cache is
  shared between runs); the stream prompts are cached by a first pass before both.

Prints one JSON line: per run the gaps' p50/p99, the talkers' first token after each final message, the
warms by event (from `/metrics`), and the load average at start and end.

    .venv/bin/python benchmarks/warm_interference.py [MODEL_DIR] ['{"vllm_scheduling_policy": "priority"}']
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import statistics
import sys
import time
import uuid
from typing import Any

import httpx
import websockets

from yap_cli.loopback import serve_on_loopback
from yap_engines import EngineSettings, load_engine
from yap_server.app import create_app
from yap_server.settings import ServerSettings
from yap_server.stats import percentiles

STREAMS = 16
TOKENS = 128
TALKERS = 4
TALKER_EVERY_S = 1.0  # the talkers start one after another
WORD_S = 0.3
REPLY_TOKENS = 16
KEY = "bench-warm-interference"
PERSONA = "You are a kind, brief voice assistant for a busy family. " * 80
WORDS = "could you please tell me what the weather will be like in Austin tomorrow morning".split()


class Barrier:
    """Set once `count` streams have their first token: the talkers start then, so that all they cost
    falls between the streams' tokens, in both runs alike."""

    def __init__(self, count: int) -> None:
        self.left, self.event = count, asyncio.Event()

    def arrive(self) -> None:
        self.left -= 1
        if self.left <= 0:
            self.event.set()

    async def wait(self) -> None:
        await self.event.wait()


class Client:
    """One `/ws` session."""

    def __init__(self, ws: Any, name: str) -> None:
        self.ws, self.name = ws, name

    async def send(self, kind: str, rid: str, **payload: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, "session_id": self.name, "request_id": rid, "payload": payload}))

    async def until(self, rid: str, kinds: tuple[str, ...]) -> dict[str, Any]:
        while True:
            frame = json.loads(await self.ws.recv())
            if frame["type"] == "error" and frame.get("request_id") == rid:
                raise RuntimeError(f"{self.name} {rid}: {frame['payload']}")
            if frame.get("request_id") == rid and frame["type"] in kinds:
                return dict(frame)


async def stream(origin: str, index: int, bias: dict[str, float], gaps: list[float], streaming: Barrier) -> None:
    async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
        client = Client(ws, f"stream-{index}")
        await client.send("start", "s", chat_prompt="You tell short stories.")
        await client.until("s", ("ack",))
        sampling = {"temperature": 0.0, "max_tokens": TOKENS, "logit_bias": bias, "sanitize_output": False}
        await client.send(
            "message", "m", user_utterance=f"Tell me a story about a cat number {index}.", sampling=sampling
        )
        last = None
        while True:
            frame = await client.until("m", ("token", "done", "cancelled"))
            if frame["type"] != "token":
                return
            now = time.perf_counter()
            if last is not None:
                gaps.append(now - last)
            else:
                streaming.arrive()
            last = now


async def talk(origin: str, index: int, warms: bool, first_tokens: list[float], streaming: Barrier) -> int:
    """Talk (once every stream has its first token) until cancelled; the number of `prefill` frames sent."""
    try:
        await streaming.wait()
        await asyncio.sleep(index * TALKER_EVERY_S)
    except asyncio.CancelledError:
        return 0
    sent = 0
    async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
        client = Client(ws, f"talker-{index}")
        await client.send("start", "s", chat_prompt=f"{uuid.uuid4().hex} {PERSONA}")
        await client.until("s", ("ack",))
        turn = 0
        while True:
            for n in range(1, len(WORDS) + 1):
                if warms:
                    await client.send("prefill", f"w{turn}-{n}", user_utterance=" ".join(WORDS[:n]))
                    sent += 1
                try:
                    await asyncio.sleep(WORD_S)
                except asyncio.CancelledError:
                    return sent
            rid = f"t{turn}"
            began = time.perf_counter()
            sampling = {"temperature": 0.0, "max_tokens": REPLY_TOKENS}
            await client.send("message", rid, user_utterance=" ".join(WORDS) + "?", sampling=sampling)
            try:
                first = await client.until(rid, ("token", "done"))
                first_tokens.append(time.perf_counter() - began)
                if first["type"] == "token":
                    await client.until(rid, ("done",))
            except asyncio.CancelledError:
                return sent
            turn += 1


def warm_events(metrics: str) -> dict[str, float]:
    """`yap_warms_total` by event, summed over kinds."""
    events: dict[str, float] = {}
    for event, value in re.findall(r'yap_warms_total\{event="(\w+)",kind="\w+"\} ([0-9.e+]+)', metrics):
        events[event] = events.get(event, 0.0) + float(value)
    return events


async def run(engine: Any, warms: bool, talkers: int) -> dict[str, Any]:
    settings = ServerSettings.from_env(
        text_api_key=KEY,
        deploy_mode="chat",
        max_concurrent_connections=STREAMS + TALKERS + 4,
        ws_idle_timeout_s=900,
        ws_warm_after_start=warms,
        ws_warm_after_turn=False,
    )
    app = create_app(settings, engines={"chat": engine}, engine_settings=EngineSettings(stream_flush_ms=0))
    bias = {str(engine.tokenizer.eos_token_id): -100.0}
    gaps: list[float] = []
    first_tokens: list[float] = []
    load_start = os.getloadavg()
    async with serve_on_loopback(app) as port:
        origin = f"ws://127.0.0.1:{port}"
        streaming = Barrier(STREAMS)
        talking = [asyncio.create_task(talk(origin, i, warms, first_tokens, streaming)) for i in range(talkers)]
        await asyncio.gather(*(stream(origin, i, bias, gaps, streaming) for i in range(STREAMS)))
        for task in talking:
            task.cancel()
        prefills = sum(n for n in await asyncio.gather(*talking, return_exceptions=True) if isinstance(n, int))
        async with httpx.AsyncClient() as http:
            metrics = (await http.get(f"http://127.0.0.1:{port}/metrics", headers={"X-API-Key": KEY})).text
    p = percentiles([g * 1000 for g in gaps], (50, 99), digits=1)
    return {
        "gap_ms_p50": p["p50"],
        "gap_ms_p99": p["p99"],
        "gaps": len(gaps),
        "prefill_frames": prefills,
        "warms": warm_events(metrics),
        "talker_first_token_ms": {
            "median": round(statistics.median(first_tokens) * 1000, 1) if first_tokens else None,
            "all": [round(t * 1000, 1) for t in first_tokens],
        },
        "load_average_1m": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
    }


async def main(model: str | None, fields: dict[str, Any]) -> dict[str, Any]:
    engine = load_engine(
        "vllm", **({"model": model} if model else {}), vllm_max_num_seqs=32, stream_flush_ms=0, **fields
    )
    try:
        await run(engine, False, 0)  # first pass: compile and cache the stream prompts for both runs alike
        report: dict[str, Any] = {
            "settings": fields,
            "streams": STREAMS,
            "tokens": TOKENS,
            "talkers": TALKERS,
            "cache_block_size": engine.cache_block_size,
        }
        report["without_warms"] = await run(engine, False, TALKERS)
        report["with_warms"] = await run(engine, True, TALKERS)
        base = report["without_warms"]["gap_ms_p99"]
        report["p99_rise_percent"] = round((report["with_warms"]["gap_ms_p99"] / base - 1) * 100, 1)
    finally:
        await engine.aclose()
    return report


if __name__ == "__main__":
    model_dir = sys.argv[1] if len(sys.argv) > 1 else None
    overrides = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    print(json.dumps(asyncio.run(main(model_dir, overrides))), flush=True)
