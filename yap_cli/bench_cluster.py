"""`yap bench cluster`: what replicas cost and save, measured on real processes on loopback.

- **death**: `--trials` turns on two `yap serve --engine fake` replicas behind Yap's replicated engine
  (its own rendezvous hashing). In each, the replica streaming the turn is SIGKILLed after a few tokens;
  the turn must finish with the text of an uninterrupted run (same seed), and the gap from the kill to
  the next token is recorded (a fresh replica replaces the dead one before the next trial).
- **overhead**: first-token latency of the remote engine straight to a replica, and through the real
  `vllm-router` (`consistent_hash`) to the same replicas, interleaved; the p50 difference is what the
  router adds.
- **sticky** (vLLM replicas, slow on CPU): prefix-cache hit rate and first-token p50 of concurrent
  sessions, each with its own long persona and its turns in order, on two vLLM replicas, session-sticky
  (router `consistent_hash` on `X-Session-ID`, and Yap's own hashing) against round-robin and against
  one replica.

Writes `<out>.json` and `<out>.png`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from yap_engines import ChatRequest, Sampling
from yap_engines.adapters.fake import FakeTokenizer
from yap_engines.chat import render_ids
from yap_engines.replicas import ReplicatedEngine

from .cluster import Member, metric_sums, replica_command, router_command, start, stop, wait_healthy
from .loopback import free_port

if TYPE_CHECKING:
    from yap_engines.adapters.openai import RemoteEngine

KEY = "bench-key"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


class Processes:
    """Replicas and routers started for a benchmark; all stopped on exit."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.running: list[subprocess.Popen[bytes]] = []

    def replica(
        self, engine: str = "fake", model: str | None = None, **extra_env: str
    ) -> tuple[Member, subprocess.Popen[bytes]]:
        port = free_port()
        argv, env, health = replica_command(engine, model, port)
        member = Member("replica", f"http://127.0.0.1:{port}", health, command=argv)
        process = start(member, {**self.env, **env, **extra_env}, self.log_dir)
        self.running.append(process)
        return member, process

    def router(self, workers: list[str], policy: str, health: str) -> tuple[Member, subprocess.Popen[bytes]]:
        port = free_port()
        member = Member(
            "router", f"http://127.0.0.1:{port}", "/health", command=router_command(port, workers, policy, health)
        )
        process = start(member, self.env, self.log_dir)
        self.running.append(process)
        return member, process

    def close(self) -> None:
        stop(list(reversed(self.running)), grace_s=5)


def remote(url: str, **kw: Any) -> RemoteEngine:
    from yap_engines.adapters.openai import RemoteEngine  # httpx: the server extra

    return RemoteEngine(
        url, api_key=KEY, model=kw.pop("model", "fake"), tokenizer=kw.pop("tokenizer", FakeTokenizer()), **kw
    )


async def timed_turn(
    engine: Any, request: ChatRequest, on_token: Callable[[int], None] | None = None
) -> tuple[str, list[float]]:
    """The reply's text and the arrival time of each delta."""
    text, times = "", []
    async with contextlib.aclosing(engine.generate(request)) as stream:
        async for delta in stream:
            if delta.text:
                text += delta.text
                times.append(time.perf_counter())
                if on_token is not None:
                    on_token(len(times))
    return text, times


# -- replica death ---------------------------------------------------------------------------------


async def death_trials(procs: Processes, trials: int, kill_after: int) -> dict[str, Any]:
    tokenizer = FakeTokenizer()
    replicas = [procs.replica() for _ in range(2)]
    for member, process in replicas:
        wait_healthy(member, process, 120)
    lost = mismatched = skipped = 0
    errors: list[str] = []
    gaps: list[float] = []
    intervals: list[float] = []
    for trial in range(trials):
        urls = [m.url for m, _ in replicas]
        engine = ReplicatedEngine({u: remote(u, tokenizer=tokenizer) for u in urls}, health_interval_s=0.5)
        messages = [{"role": "user", "content": f"trial {trial}: tell me something"}]
        prompt = render_ids(tokenizer, messages)

        def request(tag: str, trial: int = trial, prompt: list[int] = prompt, messages: Any = messages) -> ChatRequest:
            sampling = Sampling(max_tokens=120, seed=trial, temperature=0.0)
            rid = f"{tag}-{uuid.uuid4().hex[:6]}"
            return ChatRequest(rid, prompt, sampling, session_id=f"s{trial}", messages=messages)

        killed_at: list[float] = []
        try:
            reference, ref_times = await timed_turn(engine, request("ref"))
            intervals += [b - a for a, b in itertools.pairwise(ref_times)]
            home = engine.balancer.assigned(f"s{trial}")
            victim = next(i for i, (m, _) in enumerate(replicas) if m.url == home)
            pid = replicas[victim][1].pid

            def kill(n: int, pid: int = pid, killed_at: list[float] = killed_at) -> None:
                if n >= kill_after and not killed_at:
                    os.killpg(pid, signal.SIGKILL)
                    killed_at.append(time.perf_counter())

            try:
                text, times = await timed_turn(engine, request("kill"), kill)
            except Exception as exc:
                lost += 1
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
                text, times = "", []
            if text and text != reference:
                mismatched += 1
            after = [t for t in times if killed_at and t > killed_at[0]]
            if after:
                gaps.append(after[0] - killed_at[0])
        finally:
            await engine.aclose()
        if not killed_at:  # the reply ended before `kill_after` deltas: not a trial
            skipped += 1
            continue
        replicas[victim][1].wait(timeout=10)
        replacement = procs.replica()  # a fresh replica for the next trial
        wait_healthy(replacement[0], replacement[1], 120)
        replicas[victim] = replacement
    typical = statistics.median(intervals) if intervals else 0.0
    return {
        "trials": trials - skipped,
        "skipped_short_replies": skipped,
        "turns_lost": lost,
        "errors": errors,
        "texts_differing": mismatched,
        "resume_gap_s": {"p50": percentile(gaps, 50), "p99": percentile(gaps, 99), "max": max(gaps)} if gaps else None,
        "typical_token_interval_s": typical,
        "added_gap_p99_s": (percentile(gaps, 99) - typical) if gaps else None,
        "gaps_s": gaps,
    }


# -- router overhead -------------------------------------------------------------------------------


async def overhead(procs: Processes, rounds: int) -> dict[str, Any]:
    replicas = [procs.replica() for _ in range(2)]
    for member, process in replicas:
        wait_healthy(member, process, 120)
    router, router_process = procs.router([m.url for m, _ in replicas], "consistent_hash", "/healthz")
    wait_healthy(router, router_process, 300)
    tokenizer = FakeTokenizer()
    direct = remote(replicas[0][0].url, tokenizer=tokenizer)
    routed = remote(router.url, tokenizer=tokenizer)
    firsts: dict[str, list[float]] = {"direct": [], "router": []}
    try:
        for i in range(rounds):
            for name, engine in (
                (("direct", direct), ("router", routed)) if i % 2 else (("router", routed), ("direct", direct))
            ):
                messages = [{"role": "user", "content": f"hello {i}"}]
                request = ChatRequest(
                    f"o-{name}-{i}",
                    render_ids(tokenizer, messages),
                    Sampling(max_tokens=4),
                    session_id="s",
                    messages=messages,
                )
                started = time.perf_counter()
                _, times = await timed_turn(engine, request)
                firsts[name].append(times[0] - started)
    finally:
        await direct.aclose()
        await routed.aclose()
    p50 = {name: statistics.median(values) for name, values in firsts.items()}
    return {
        "rounds": rounds,
        "first_token_p50_s": p50,
        "added_first_token_p50_ms": (p50["router"] - p50["direct"]) * 1000,
        "first_token_p99_s": {name: percentile(values, 99) for name, values in firsts.items()},
    }


# -- sticky vs round-robin (vLLM) ------------------------------------------------------------------


PERSONA_SENTENCES = (
    "You are a patient, warm voice assistant for a travel company.",
    "You answer in one or two short sentences, since every word is spoken aloud.",
    "You never read out links, tables or lists; you describe them in plain speech.",
    "When a traveller sounds unsure, you offer the two likeliest options and ask which one fits.",
    "You know the company's rail, ferry and coach timetables for the coming season.",
    "Refunds are possible up to 48 hours before departure, minus a small handling fee.",
    "Luggage up to 23 kilograms travels free; a second bag costs a flat fee per leg.",
    "You confirm dates, times and names back to the traveller before you book anything.",
    "If a question is outside travel, you say so kindly and steer back to the trip.",
    "You speak the traveller's language and keep the tone calm when plans go wrong.",
    "Children under four travel free on a parent's lap; older children need their own seat.",
    "Pets under eight kilograms may travel in a carrier on most routes, except night trains.",
)


def persona(tokenizer: Any, tag: str, tokens: int) -> str:
    """A system prompt of about `tokens` tokens, its own for each tag: the tag opens it, and the
    sentences come in an order drawn from the tag, so no two sessions share a cached block."""
    order = random.Random(tag)
    text = f"[{tag}]"
    while len(tokenizer.encode(text)) < tokens:
        text += " " + " ".join(order.sample(PERSONA_SENTENCES, len(PERSONA_SENTENCES)))
    return tokenizer.decode(tokenizer.encode(text)[:tokens])


async def sticky(
    procs: Processes,
    model: str,
    sessions: int,
    turns: int,
    persona_tokens: int,
    max_tokens: int = 16,
    think_s: float = 1.0,
) -> dict[str, Any]:
    """Two vLLM replicas, started once, and four setups run one after the other: one replica alone,
    router round-robin, router `consistent_hash` on `X-Session-ID`, and Yap's own hashing over both URLs.

    In each setup the sessions run concurrently, as users do, and the turns of a session one after the
    other, each after a seeded pause of up to `think_s`. Each session has its own persona (its setup
    and number open it, see `persona`), so no session, and no setup, hits another's cache: every hit
    is the session's own history."""
    from yap_engines.chat import load_tokenizer

    tokenizer = load_tokenizer(model)
    # one core each (vLLM's automatic binding would put both on the same core of a 2-core host)
    cores = os.cpu_count() or 2
    replicas = [procs.replica("vllm", model, VLLM_CPU_OMP_THREADS_BIND=str(i % cores)) for i in range(2)]
    for member, process in replicas:
        wait_healthy(member, process, 900)
    urls = [m.url for m, _ in replicas]
    setups: dict[str, Any] = {}
    for setup in ("single", "round_robin", "router_sticky", "yap_sticky"):
        used = urls[:1] if setup == "single" else urls
        router_process = None
        if setup in ("round_robin", "router_sticky"):
            policy = "round_robin" if setup == "round_robin" else "consistent_hash"
            router, router_process = procs.router(used, policy, "/health")
            wait_healthy(router, router_process, 300)
            engine: Any = ReplicatedEngine({router.url: remote(router.url, model=model, tokenizer=tokenizer)})
        else:
            engine = ReplicatedEngine({u: remote(u, model=model, tokenizer=tokenizer) for u in used})
        before = [_prefix(u) for u in used]
        firsts: dict[int, list[float]] = {turn: [] for turn in range(turns)}

        async def session(s: int, setup: str = setup, engine: Any = engine, firsts: Any = firsts) -> None:
            pause = random.Random(f"{s}")  # the same pauses in every setup
            history = [{"role": "system", "content": persona(tokenizer, f"{setup} {s}", persona_tokens)}]
            for turn in range(turns):
                await asyncio.sleep(pause.uniform(0, think_s))
                history.append({"role": "user", "content": f"Question {turn} from traveller {s}?"})
                sampling = Sampling(max_tokens=max_tokens, temperature=0.0)
                request = ChatRequest(
                    f"{setup}-{s}-{turn}",
                    render_ids(tokenizer, history),
                    sampling,
                    session_id=f"{setup}-{s}",
                    messages=history,
                )
                started = time.perf_counter()
                text, times = await timed_turn(engine, request)
                firsts[turn].append(times[0] - started if times else float("nan"))
                history.append({"role": "assistant", "content": text})

        started = time.perf_counter()
        try:
            await asyncio.gather(*(session(s) for s in range(sessions)))
        finally:
            await engine.aclose()
        elapsed = time.perf_counter() - started
        after = [_prefix(u) for u in used]
        hits = sum(x[0] - y[0] for x, y in zip(after, before, strict=True))
        queries = sum(x[1] - y[1] for x, y in zip(after, before, strict=True))
        every = [v for turn in firsts.values() for v in turn]
        later = [v for turn, values in firsts.items() if turn for v in values]
        setups[setup] = {
            "replicas": len(used),
            "prefix_cache_hit_rate": hits / queries if queries else None,
            "prefix_cache_hits": hits,
            "prefix_cache_queries": queries,
            "first_token_p50_s": statistics.median(every),
            "first_token_p90_s": percentile(every, 90),
            "first_token_p50_later_turns_s": statistics.median(later) if later else None,
            "first_token_p50_by_turn_s": [statistics.median(firsts[t]) for t in range(turns)],
            "elapsed_s": elapsed,
        }
        if router_process is not None:
            stop([router_process], grace_s=5)
    return {
        "sessions": sessions,
        "turns": turns,
        "persona_tokens": persona_tokens,
        "max_tokens": max_tokens,
        "think_s": think_s,
        "setups": setups,
    }


def _prefix(url: str) -> tuple[float, float]:
    import httpx  # the server extra

    sums = metric_sums(httpx.get(f"{url}/metrics", timeout=5).text)
    return sums.get("vllm:prefix_cache_hits_total", 0.0), sums.get("vllm:prefix_cache_queries_total", 0.0)


# -- the command -----------------------------------------------------------------------------------


async def _run(args: argparse.Namespace, procs: Processes) -> dict[str, Any]:
    machine = {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0], "loadavg": list(os.getloadavg())}
    report: dict[str, Any] = {"machine": machine}
    if "death" in args.parts:
        report["death"] = await death_trials(procs, args.trials, args.kill_after)
    if "overhead" in args.parts:
        report["overhead"] = await overhead(procs, args.rounds)
    if "sticky" in args.parts:
        report["sticky"] = await sticky(
            procs, args.model, args.sessions, args.turns, args.persona_tokens, args.max_tokens, args.think_s
        )
    machine["load_1m_after"], machine["loadavg_after"] = os.getloadavg()[0], list(os.getloadavg())
    return report


def bench_cluster(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {"TEXT_API_KEY": KEY, "YAP_FAKE_TOKENS_PER_S": str(args.tokens_per_s), "YAP_SEED": "0"}
    procs = Processes(Path(os.environ.get("YAP_RUNS_DIR") or "runs") / "bench-cluster-logs", env)

    def on_sigterm(signum: int, frame: Any) -> None:
        raise SystemExit(143)  # so `finally` stops every process this benchmark started

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        report = asyncio.run(_run(args, procs))
    finally:
        procs.close()
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    _plot(report, out.with_suffix(".png"))
    printed = {
        k: ({kk: vv for kk, vv in v.items() if kk != "gaps_s"} if isinstance(v, dict) else v) for k, v in report.items()
    }
    print(json.dumps(printed, indent=2))
    return 0


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[str] = [k for k in ("death", "overhead") if k in report]
    if "sticky" in report:
        panels += ["sticky_hits", "sticky_first_token"]
    fig, axes = plt.subplots(1, max(1, len(panels)), figsize=(5 * max(1, len(panels)), 4))
    axes = axes if len(panels) > 1 else [axes]
    for ax, name in zip(axes, panels, strict=False):
        if name == "death" and report[name].get("gaps_s"):
            data = report[name]
            ax.hist([g * 1000 for g in data["gaps_s"]], bins=20)
            ax.set_title(f"replica SIGKILL: resume gap ({data['trials']} trials, {data['turns_lost']} lost)")
            ax.set_xlabel("kill -> next token (ms)")
        elif name == "overhead":
            data = report[name]
            p50 = data["first_token_p50_s"]
            ax.bar(list(p50), [v * 1000 for v in p50.values()])
            ax.set_title(f"first token p50 (+{data['added_first_token_p50_ms']:.1f} ms via router)")
            ax.set_ylabel("ms")
        elif name.startswith("sticky"):
            sticky = report["sticky"]
            setups = sticky["setups"]
            size = f"{sticky['sessions']} sessions x {sticky['turns']} turns"
            if name == "sticky_hits":
                ax.bar(list(setups), [setups[n]["prefix_cache_hit_rate"] or 0 for n in setups])
                ax.set_title(f"prefix-cache hit rate ({size})")
            else:
                ax.bar(list(setups), [setups[n]["first_token_p50_s"] * 1000 for n in setups])
                ax.set_title(f"first token p50 ({size})")
                ax.set_ylabel("ms")
            ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def register(bench_commands: Any) -> None:
    bench = bench_commands.add_parser("cluster", help="replica death, router overhead, sticky vs round-robin")
    bench.add_argument("--parts", nargs="+", choices=("death", "overhead", "sticky"), default=["death", "overhead"])
    bench.add_argument("--trials", type=int, default=50, help="replica deaths (default 50)")
    bench.add_argument("--kill-after", type=int, default=3, help="deltas streamed before the SIGKILL")
    bench.add_argument("--tokens-per-s", type=float, default=30.0, help="fake replicas' rate")
    bench.add_argument("--rounds", type=int, default=200, help="overhead: turns per path")
    bench.add_argument("--model", default="engines/smollm2-135m-instruct", help="sticky: the vLLM replicas' model")
    bench.add_argument("--sessions", type=int, default=16)
    bench.add_argument("--turns", type=int, default=6)
    bench.add_argument("--persona-tokens", type=int, default=1000)
    bench.add_argument("--max-tokens", type=int, default=16, help="sticky: reply length (tokens)")
    bench.add_argument("--think-s", type=float, default=1.0, help="sticky: longest pause before a turn (s)")
    bench.add_argument("--out", default="benchmarks/cluster", help="output path without suffix (.json, .png)")
    bench.set_defaults(run=bench_cluster)
