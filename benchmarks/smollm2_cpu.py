"""First-token latency and decode speed of the embedded default (SmolLM2-135M-Instruct) on vLLM.

Four cases, greedy, 48 tokens each with EOS banned so every reply has the same length:
a short prompt (28 tokens) seen for the first time (cold) and again (warm: median of 3), and a
~1,000-token persona seen for the first time (cold, nothing cached) and then with three other user
lines after it (warm: the persona's whole KV blocks come from the prefix cache). Prints one JSON line.

    .venv/bin/python benchmarks/smollm2_cpu.py [MODEL_DIR] ['{"dtype": "float32"}'] [--repeats 5] [--short-only]
        [--server] [--emulate-avx2]

The second argument overrides `EngineSettings` fields; vLLM's own variables (`VLLM_CPU_KVCACHE_SPACE`,
`VLLM_CPU_OMP_THREADS_BIND`, ...) come from the environment and are echoed in the report.

- `--repeats N`: the warm short question is the median of N (default 3); `--short-only` skips the persona.
- `--server`: also the short question's first token through Yap's server (`/v1/chat/completions` on
  127.0.0.1, read with the OpenAI SDK), median of N, on the same engine.
- `--vllm-server`: instead, the short question's first token through vLLM's own OpenAI server
  (`python -m vllm.entrypoints.openai.api_server`, what `vllm serve` runs) on 127.0.0.1, OpenAI SDK, median
  of N after a first, uncounted request; the dtype is the override's `dtype` (default `auto`: vLLM's own).
- `--emulate-avx2`: run as on a CPU with AVX2 but no AVX-512, no native bf16 and no AMX. The process re-runs
  itself with `ONEDNN_MAX_CPU_ISA=AVX2` (oneDNN), `ATEN_CPU_CAPABILITY=avx2` (PyTorch's kernels),
  `MKL_ENABLE_INSTRUCTIONS=AVX2` (MKL), and `avx2_emulation/` on `PYTHONPATH`, whose `sitecustomize` makes
  `torch.cpu`'s AVX-512/AMX probes answer False in every process, so vLLM's CPU build loads its AVX2 kernel
  library and AVX2 attention and GEMM paths. The report gives the real and the emulated CPU flags and the
  dtype `YAP_DTYPE=auto` would pick from the emulated ones (pass it explicitly as the second argument).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from yap_engines import ChatRequest, Sampling, load_engine
from yap_engines.chat import render_ids
from yap_engines.dtype import NATIVE_BF16_FLAGS, choose_dtype, cpu_flags

EMULATION_DIR = Path(__file__).resolve().parent / "avx2_emulation"
AVX2_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
NOT_ON_AVX2 = ("avx512", "amx", "avx_vnni")  # flag prefixes an AVX2-only CPU lacks
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", *NATIVE_BF16_FLAGS, "amx_tile")

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


def cpu_report(emulated: bool) -> dict[str, Any]:
    """The machine's bf16-relevant CPU flags; under the emulation also the flags it emulates and the dtype
    `YAP_DTYPE=auto` picks from them."""
    flags = cpu_flags()
    seen = sorted(f for f in flags if f in SHOWN_FLAGS)
    report: dict[str, Any] = {"cores": os.cpu_count(), "flags": seen}
    if emulated:
        kept = {f for f in flags if not f.startswith(NOT_ON_AVX2)}
        report["emulated_flags"] = sorted(f for f in kept if f in SHOWN_FLAGS)
        report["emulation"] = {
            **AVX2_ENV,
            "torch.cpu probes": "_is_avx512_supported, _is_avx512_bf16_supported, _is_vnni_supported, "
            "_is_amx_tile_supported, _is_amx_fp16_supported -> False (avx2_emulation/sitecustomize.py)",
        }
        report["auto_dtype_on_emulated_cpu"] = choose_dtype("auto", accelerator=False, flags=kept).as_dict()
    return report


def vllm_kernel_libraries() -> list[str]:
    """The vLLM kernel libraries (`_C*.so`) mapped in this process's descendants (vLLM's engine core):
    proof of which ISA build of vLLM's own kernels runs."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[str] = set()
    todo = list(children.get(os.getpid(), []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            continue
        found.update(line.rsplit("/", 1)[1] for line in maps.splitlines() if "/vllm/_C" in line)
    return sorted(found)


async def sdk_first_token_ms(client: Any, model: str, messages: list[dict[str, str]], repeats: int) -> list[float]:
    """The first content token's time (ms) of a streamed chat completion through the OpenAI SDK `client`,
    `repeats` times after a first, uncounted request (it caches the prompt, as short_warm)."""
    times = []
    for _ in range(repeats + 1):
        sent, first = time.perf_counter(), None
        stream = await client.chat.completions.create(
            model=model,
            messages=messages,
            max_tokens=48,
            temperature=0.0,
            stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
        assert first is not None
        times.append((first - sent) * 1000)
    return times[1:]


async def server_first_token(engine: Any, messages: list[dict[str, str]], repeats: int) -> dict[str, Any]:
    """The short question's first token through Yap's server (`/v1/chat/completions`, OpenAI SDK), median."""
    from openai import AsyncOpenAI

    from yap_cli.loopback import serve_on_loopback
    from yap_engines import EngineSettings
    from yap_server.app import create_app
    from yap_server.settings import ServerSettings

    key = "bench-smollm2"
    settings = ServerSettings.from_env(text_api_key=key, deploy_mode="chat", max_concurrent_connections=4)
    app = create_app(settings, engines={"chat": engine}, engine_settings=EngineSettings.from_env(chat_max_len=4096))
    async with serve_on_loopback(app) as port:
        client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)
        times = await sdk_first_token_ms(client, engine.model_id, messages, repeats)
        await client.close()
    return {"ttft_ms": round(statistics.median(times), 1), "runs_ms": [round(t, 1) for t in times]}


async def vllm_server_first_token(port: int, model: str, repeats: int, server: Any) -> dict[str, Any]:
    """Wait for vLLM's own OpenAI server (`server`, a child process) on `port`; the short question's first
    token through it, median of `repeats` after a first, uncounted request."""
    import httpx
    from openai import AsyncOpenAI

    started = time.perf_counter()
    async with httpx.AsyncClient() as http:
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"vLLM's server exited with {server.returncode}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/v1/models")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(1.0)
    report: dict[str, Any] = {
        "ready_after_s": round(time.perf_counter() - started, 1),
        "vllm_kernel_libraries": vllm_kernel_libraries(),
    }
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0)
    messages = [
        {"role": "system", "content": "You are a brief voice assistant."},
        {"role": "user", "content": "What's the capital of France?"},
    ]
    times = await sdk_first_token_ms(client, model, messages, repeats)
    await client.close()
    report["ttft_ms"] = round(statistics.median(times), 1)
    report["runs_ms"] = [round(t, 1) for t in times]
    return report


def vllm_server_report(model: str, dtype: str, repeats: int) -> dict[str, Any]:
    """`--vllm-server`: start vLLM's OpenAI server (what `vllm serve` runs), measure, stop it by its pid."""
    import subprocess

    from yap_cli.loopback import free_port

    port = free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model, "--port", str(port)]
    command += ["--host", "127.0.0.1", "--max-model-len", "4096", "--dtype", dtype, "--enforce-eager"]
    load = os.getloadavg()[0]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        served = asyncio.run(vllm_server_first_token(port, model, repeats, server))
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
    emulated = os.environ.get("YAP_BENCH_EMULATE_AVX2") == "1"
    return {
        "settings": {"dtype": dtype},
        "cpu": cpu_report(emulated),
        "short_vllm_server": served,
        "load_average_1m": load,
        "load_average_1m_end": os.getloadavg()[0],
    }


async def main(
    model: str, fields: dict[str, Any], *, repeats: int = 3, short_only: bool = False, server: bool = False
) -> dict[str, Any]:
    started = time.perf_counter()
    emulated = os.environ.get("YAP_BENCH_EMULATE_AVX2") == "1"
    load_at_start = os.getloadavg()
    engine = load_engine("vllm", model=model, vllm_max_num_seqs=8, **fields)
    report: dict[str, Any] = {
        "settings": fields,
        "env": {k: v for k, v in os.environ.items() if k.startswith("VLLM_CPU") or k in AVX2_ENV},
        "cpu": cpu_report(emulated),
        "startup_s": round(time.perf_counter() - started, 1),
        "vllm_kernel_libraries": vllm_kernel_libraries(),
        "load_average_1m": load_at_start[0],
    }
    tokenizer = engine.tokenizer
    bias = {tokenizer.eos_token_id: -100.0}
    try:
        system = {"role": "system", "content": "You are a brief voice assistant."}
        question = [system, {"role": "user", "content": "What's the capital of France?"}]
        short = render_ids(tokenizer, question)
        report["short_cold"] = await timed(engine, short, bias)
        report["short_warm"] = median([await timed(engine, short, bias) for _ in range(repeats)])
        report["short_repeats"] = repeats
        if server:
            report["short_yap_server"] = await server_first_token(engine, question, repeats)
        if short_only:
            report["load_average_1m_end"] = os.getloadavg()[0]
            return report
        rules = {"role": "system", "content": persona(tokenizer)}
        opener = render_ids(tokenizer, [rules, {"role": "user", "content": "Hi! How are you today?"}])
        report["persona_cold"] = await timed(engine, opener, bias)
        lines = ("What should I plant this spring?", "What is your favourite season?", "Can you suggest a soup?")
        warm = [
            await timed(engine, render_ids(tokenizer, [rules, {"role": "user", "content": q}]), bias) for q in lines
        ]
        report["persona_warm"] = median(warm)
        report["load_average_1m_end"] = os.getloadavg()[0]
    finally:
        await engine.aclose()
    return report


def emulate_avx2() -> None:
    """Re-run this process with the AVX2 emulation in place (see the module doc); a no-op once it is."""
    if os.environ.get("YAP_BENCH_EMULATE_AVX2") == "1":
        return
    env = {**os.environ, **AVX2_ENV, "YAP_BENCH_EMULATE_AVX2": "1"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(EMULATION_DIR), os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default="engines/smollm2-135m-instruct")
    parser.add_argument("overrides", nargs="?", default="{}", help="EngineSettings fields as JSON")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--short-only", action="store_true")
    parser.add_argument("--server", action="store_true")
    parser.add_argument("--vllm-server", action="store_true")
    parser.add_argument("--emulate-avx2", action="store_true")
    args = parser.parse_args()
    if args.emulate_avx2:
        emulate_avx2()
    if args.vllm_server:
        dtype = json.loads(args.overrides).get("dtype", "auto")
        print(json.dumps(vllm_server_report(args.model, dtype, args.repeats)), flush=True)
        sys.exit(0)
    result = asyncio.run(
        main(
            args.model, json.loads(args.overrides), repeats=args.repeats, short_only=args.short_only, server=args.server
        )
    )
    print(json.dumps(result), flush=True)
