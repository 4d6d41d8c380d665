"""`yap bench soak`: many concurrent `/ws` sessions for a while, then the leak figures.

The server (and its engine: `FakeEngine`, or vLLM on the demo model) runs in this process on
127.0.0.1; the load runs in a child process, so the server's RSS is its own. Each session does,
at random: whole turns, barge-ins, cancels with and without `spoken_text`, pings, idle pauses, and
abrupt disconnects followed by a reconnect. When the load ends, the leak figures are sampled:
connection slots held, engine requests still running, generations in flight, and `Session` /
`Connection` / `Turn` objects still in memory; all must be 0. Writes `soak.json` and `soak.png`
(latency CDF, RSS over time) to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yap_server.stats import percentiles

KEY = "soak-key"
TERMINAL = ("done", "cancelled", "error")
ACTIONS = ("turn", "barge_in", "cancel", "cancel_spoken", "ping", "idle", "disconnect")
WEIGHTS = (40, 10, 10, 10, 10, 12, 8)


# -- the load (child process) ------------------------------------------------------------------


@dataclass
class LoadStats:
    """What the sessions saw, merged over all of them."""

    first_token_ms: list[float] = field(default_factory=list)
    cancel_ms: list[float] = field(default_factory=list)
    ping_ms: list[float] = field(default_factory=list)
    outcomes: Counter[str] = field(default_factory=Counter)  # done / cancelled:<reason> / error:<code>
    actions: Counter[str] = field(default_factory=Counter)
    reconnects: int = 0
    invariant_violations: list[str] = field(default_factory=list)
    client_errors: Counter[str] = field(default_factory=Counter)


class SoakSession:
    """One simulated user on one `/ws` connection at a time."""

    def __init__(self, index: int, url: str, stats: LoadStats, rng: random.Random) -> None:
        self.index, self.url, self.stats, self.rng = index, url, stats, rng
        self.ws: Any = None
        self.ended: set[str] = set()

    async def send(self, kind: str, rid: str, **payload: Any) -> None:
        frame = {"type": kind, "session_id": f"soak-{self.index}", "request_id": rid, "payload": payload}
        await self.ws.send(json.dumps(frame))

    async def recv(self) -> dict[str, Any]:
        frame = dict(json.loads(await asyncio.wait_for(self.ws.recv(), 60)))
        rid = frame.get("request_id", "")
        if rid in self.ended and frame["type"] not in ("ack", "pong"):
            self.stats.invariant_violations.append(f"{frame['type']} after the end of turn {rid}")
        if frame["type"] in TERMINAL:
            self.ended.add(rid)
        return frame

    async def message(self) -> tuple[str, float]:
        rid = f"t-{uuid.uuid4().hex[:10]}"
        sampling = {"max_tokens": self.rng.randint(16, 96)}
        await self.send("message", rid, user_utterance=self.rng.choice(UTTERANCES), sampling=sampling)
        return rid, time.perf_counter()

    async def until(self, rid: str, sent: float, *, first_token: bool = False) -> dict[str, Any]:
        """Read up to the first token of `rid` (or its end), recording the first-token latency."""
        while True:
            frame = await self.recv()
            if frame["request_id"] != rid:
                continue
            if frame["type"] == "token":
                self.stats.first_token_ms.append((time.perf_counter() - sent) * 1000)
                if first_token:
                    return frame
                return await self.end_of(rid)
            if frame["type"] in TERMINAL:
                self._outcome(frame)
                return frame

    async def end_of(self, rid: str) -> dict[str, Any]:
        while (frame := await self.recv())["request_id"] != rid or frame["type"] not in TERMINAL:
            pass
        self._outcome(frame)
        return frame

    def _outcome(self, frame: dict[str, Any]) -> None:
        payload = frame["payload"]
        kind = frame["type"]
        detail = payload.get("reason") if kind == "cancelled" else payload.get("code") if kind == "error" else None
        self.stats.outcomes[f"{kind}:{detail}" if detail else kind] += 1

    async def act(self, action: str) -> bool:
        """Do one action; False when the connection was dropped on purpose."""
        self.stats.actions[action] += 1
        if action == "turn":
            rid, sent = await self.message()
            await self.until(rid, sent)
        elif action == "barge_in":
            first, sent = await self.message()
            if (await self.until(first, sent, first_token=True))["type"] == "token":
                second, sent2 = await self.message()
                await self.end_of(first)
                await self.until(second, sent2)
        elif action in ("cancel", "cancel_spoken"):
            rid, sent = await self.message()
            if (await self.until(rid, sent, first_token=True))["type"] == "token":
                spoken = {"spoken_text": "Sure"} if action == "cancel_spoken" else {}
                cancelled_at = time.perf_counter()
                await self.send("cancel", f"c-{rid}", reason="user", **spoken)
                if (await self.end_of(rid))["type"] == "cancelled":
                    self.stats.cancel_ms.append((time.perf_counter() - cancelled_at) * 1000)
        elif action == "ping":
            rid, sent = f"p-{uuid.uuid4().hex[:8]}", time.perf_counter()
            await self.send("ping", rid)
            while (frame := await self.recv())["type"] != "pong" or frame["request_id"] != rid:
                pass
            self.stats.ping_ms.append((time.perf_counter() - sent) * 1000)
        elif action == "idle":
            await asyncio.sleep(self.rng.uniform(0.5, 3.0))
        elif action == "disconnect":
            rid, sent = await self.message()
            if self.rng.random() < 0.7:
                await self.until(rid, sent, first_token=True)
            self.ws.transport.abort()  # no close handshake: the server must notice and clean up
            return False
        return True

    async def run(self, deadline: float) -> None:
        import websockets

        await asyncio.sleep(self.rng.uniform(0, 2))  # spread the handshakes
        while time.monotonic() < deadline:
            try:
                async with websockets.connect(self.url, max_size=None, open_timeout=30) as ws:
                    self.ws, self.ended = ws, set()
                    await self.send("start", "start", chat_prompt="You are a brief voice assistant.")
                    while (await self.recv())["type"] != "ack":
                        pass
                    while time.monotonic() < deadline:
                        if not await self.act(self.rng.choices(ACTIONS, WEIGHTS)[0]):
                            break
                    else:
                        if self.rng.random() < 0.5:
                            await self.send("end", "end")
            except Exception as exc:  # a session must keep going: count what went wrong
                self.stats.client_errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
            if time.monotonic() < deadline:
                self.stats.reconnects += 1


UTTERANCES = (
    "hi, how are you?",
    "what's the weather like?",
    "tell me something fun",
    "can you look at my screen?",
    "what time is it in Tokyo?",
    "thanks, that's all",
)


async def run_load(url: str, sessions: int, duration_s: float, seed: int) -> LoadStats:
    stats = LoadStats()
    deadline = time.monotonic() + duration_s
    await asyncio.gather(
        *(SoakSession(i, url, stats, random.Random(seed * 100_003 + i)).run(deadline) for i in range(sessions))
    )
    return stats


def _load_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    stats = asyncio.run(run_load(args.url, args.sessions, args.duration, args.seed))
    print(
        json.dumps({name: dict(value) if isinstance(value, Counter) else value for name, value in vars(stats).items()})
    )
    return 0


# -- the server side (this process) ------------------------------------------------------------


def latency_summary(values: list[float]) -> dict[str, float | int | None]:
    return {"n": len(values), **percentiles(values, digits=2), "max": round(max(values), 2) if values else None}


def slope_per_minute(samples: list[tuple[float, float]]) -> float | None:
    """Least-squares slope of (seconds, MiB) samples, in MiB per minute."""
    if len(samples) < 3:
        return None
    xs, ys = [s[0] for s in samples], [s[1] for s in samples]
    return round(statistics.linear_regression(xs, ys).slope * 60, 3)


def objects_in_memory() -> dict[str, int]:
    """Live `Session`, `Connection` and `Turn` objects after a full garbage collection."""
    from yap_server.connection import Connection
    from yap_server.ws.session import Session
    from yap_server.ws.turn import Turn

    gc.collect()
    counts = {"sessions_in_memory": 0, "connections_in_memory": 0, "turns_in_memory": 0}
    for obj in gc.get_objects():
        if isinstance(obj, Session):
            counts["sessions_in_memory"] += 1
        elif isinstance(obj, Connection):
            counts["connections_in_memory"] += 1
        elif isinstance(obj, Turn):
            counts["turns_in_memory"] += 1
    return counts


def build_engine(engine_name: str, max_num_seqs: int) -> Any:
    from yap_engines import FakeEngine, load_engine

    if engine_name == "fake":
        return FakeEngine(seed=1, tokens_per_s=100, first_token_delay_s=0.02)
    from yap_engines.demo import build_demo_chat
    from yap_engines.settings import EngineSettings

    model = build_demo_chat(EngineSettings.from_env().demo_model_dir)
    return load_engine(engine_name, model=str(model), vllm_max_num_seqs=max_num_seqs)


async def soak(engine_name: str, sessions: int, duration_s: float, seed: int, max_num_seqs: int) -> dict[str, Any]:
    """Run the soak; returns the report (with the raw latencies under `"raw"`, for the plot)."""
    import httpx
    import psutil

    from yap_server.app import create_app
    from yap_server.settings import ServerSettings

    from .loopback import serve_on_loopback

    settings = ServerSettings.from_env(
        text_api_key=KEY,
        max_concurrent_connections=sessions * 2,
        deploy_mode="chat",
        ws_idle_timeout_s=30,
        ws_max_messages_per_window=0,
        ws_max_cancels_per_window=0,
        ws_handshake_acquire_timeout_s=5,
    )
    engine = build_engine(engine_name, max_num_seqs)
    me = psutil.Process()
    rss: list[tuple[float, float]] = []
    started = time.perf_counter()

    async def sample_rss(stop: asyncio.Event) -> None:
        while not stop.is_set():
            total = me.memory_info().rss + sum(_child_rss(c) for c in me.children(recursive=True) if c.pid != load_pid)
            rss.append((round(time.perf_counter() - started, 2), round(total / 2**20, 1)))
            try:
                await asyncio.wait_for(stop.wait(), 0.5)
            except TimeoutError:
                pass

    load_pid = -1
    try:
        app = create_app(settings, engines={"chat": engine})
        async with serve_on_loopback(app) as port:
            url = f"ws://127.0.0.1:{port}/ws?api_key={KEY}"
            stop = asyncio.Event()
            sampler = asyncio.create_task(sample_rss(stop))
            load = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "yap_cli.soak",
                url,
                f"--sessions={sessions}",
                f"--duration={duration_s}",
                f"--seed={seed}",
                stdout=subprocess.PIPE,
            )
            load_pid = load.pid
            run_started = time.perf_counter() - started
            output, _ = await load.communicate()
            run_ended = time.perf_counter() - started
            if load.returncode != 0:
                raise RuntimeError(f"the load process failed (exit {load.returncode}); see its stderr above")
            stats = json.loads(output)
            await asyncio.sleep(2)  # let the server notice the last disconnects
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", headers={"X-API-Key": KEY}) as http:
                status = (await http.get("/status")).json()
            leaks = {
                "connection_slots_held": status["active_connections"],
                "active_generations": status["active_generations"],
                "engine_requests_running": engine.num_unfinished_requests(),
                **objects_in_memory(),
            }
            stop.set()
            await sampler
    finally:
        await engine.aclose()

    warm = [s for s in rss if run_started + (run_ended - run_started) / 2 <= s[0] <= run_ended]
    report = {
        "engine": engine_name,
        "sessions": sessions,
        "duration_s": duration_s,
        "seed": seed,
        "turns": {
            "completed": stats["outcomes"].get("done", 0),
            "outcomes": stats["outcomes"],
            "actions": stats["actions"],
            "reconnects": stats["reconnects"],
        },
        "latency_ms": {
            "first_token": latency_summary(stats["first_token_ms"]),
            "cancel_to_cancelled": latency_summary(stats["cancel_ms"]),
            "ping_to_pong": latency_summary(stats["ping_ms"]),
        },
        "rss_mib": {
            "start": rss[0][1] if rss else None,
            "peak": max(s[1] for s in rss) if rss else None,
            "end": rss[-1][1] if rss else None,
            "slope_mib_per_min_second_half": slope_per_minute(warm),
            "samples": rss,
        },
        "leaks": leaks,
        "leak_free": not any(leaks.values()),
        "invariant_violations": stats["invariant_violations"][:20],
        "client_errors": stats["client_errors"],
    }
    report["raw"] = {"first_token_ms": stats["first_token_ms"], "cancel_ms": stats["cancel_ms"]}
    report["load_window_s"] = [round(run_started, 2), round(run_ended, 2)]
    return report


def write_outputs(report: dict[str, Any], out: Path) -> None:
    """`soak.json` (without the raw latencies) and `soak.png` in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    raw = report.pop("raw")
    (out / "soak.json").write_text(json.dumps(report, indent=2))
    plot(report, raw, out / "soak.png", tuple(report["load_window_s"]))  # type: ignore[arg-type]


def _child_rss(process: Any) -> int:
    try:
        return int(process.memory_info().rss)
    except Exception:  # the child may have exited between listing and reading
        return 0


def plot(report: dict[str, Any], stats: dict[str, Any], path: Path, window: tuple[float, float]) -> None:
    """Latency CDFs (first token, cancel) and server RSS over time, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (cdf, mem) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in (("first token", stats["first_token_ms"]), ("cancel → cancelled", stats["cancel_ms"])):
        if values:
            ordered = sorted(values)
            cdf.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))], label=f"{name} (n={len(values)})")
    cdf.set_xscale("log")
    cdf.set_xlabel("latency (ms, log)")
    cdf.set_ylabel("fraction of turns")
    cdf.set_title(f"latency CDF — {report['engine']}, {report['sessions']} sessions")
    cdf.grid(True, which="both", alpha=0.3)
    cdf.legend()
    samples = report["rss_mib"]["samples"]
    mem.plot([s[0] for s in samples], [s[1] for s in samples])
    mem.axvspan(*window, alpha=0.1, label="load running")
    mem.set_xlabel("time (s)")
    mem.set_ylabel("server RSS (MiB, incl. engine processes)")
    mem.set_title(f"RSS — slope {report['rss_mib']['slope_mib_per_min_second_half']} MiB/min (2nd half)")
    mem.grid(True, alpha=0.3)
    mem.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def register(bench_commands: Any) -> None:
    """Register `yap bench soak` under `yap bench`."""
    parser = bench_commands.add_parser("soak", help="many sessions for a while: latencies, RSS, leak figures")
    parser.add_argument("--engine", default="fake", help="fake | vllm (vllm: the offline demo model)")
    parser.add_argument("--sessions", type=int, default=200, help="concurrent sessions")
    parser.add_argument("--duration", type=float, default=60, help="seconds of load")
    parser.add_argument("--out", type=Path, default=Path("runs/soak"), help="directory for soak.json and soak.png")
    parser.add_argument("--seed", type=int, default=0, help="seed of the sessions' random choices")
    parser.add_argument("--max-num-seqs", type=int, default=64, help="vLLM: sequences batched at once")
    parser.set_defaults(run=_soak_command)


def _soak_command(args: argparse.Namespace) -> int:
    report = asyncio.run(soak(args.engine, args.sessions, args.duration, args.seed, args.max_num_seqs))
    write_outputs(report, args.out)
    summary = {k: v for k, v in report.items() if k != "rss_mib"}
    summary["rss_mib"] = {k: v for k, v in report["rss_mib"].items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}", file=sys.stderr)
    return 0 if report["leak_free"] and not report["invariant_violations"] else 1


if __name__ == "__main__":
    sys.exit(_load_main(sys.argv[1:]))
