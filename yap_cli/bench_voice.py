"""`yap bench voice`: people talking to Yap, first-token latency after the final transcript, with and without warms.

One new session with a persona of about `--persona-tokens` tokens, then `TURNS`: each turn's words arrive
as interim transcripts at speaking pace (one word every `--word-ms`), one of them revised on the way
("Boston" -> "Austin"), then the final `message`. The third turn is cut short by a barge-in (`cancel` with
`spoken_text`). The same script runs twice on one engine, each run with its own persona (so neither finds
the other's cache): without warms (no `prefill` frames, automatic warms off), and with them.

Reported per turn: first-token latency from the final `message`, the prompt and cached tokens of the final
prompt, and whether the cache held at least "the last warm's prompt minus one cache block" (the issue's
target: the final prompt's length minus one block minus the tokens the final text changed). JSON and a PNG.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

WORD_MS = 300.0
TURNS: list[tuple[list[str], dict[int, str], str]] = [
    # (the words as finally said, {word index: what the interim said first}, the final text)
    ("What is the weather like in Austin today".split(), {6: "Boston"}, "What is the weather like in Austin today?"),
    ("And should I take an umbrella with me".split(), {5: "umbrellas"}, "And should I take an umbrella with me?"),
    ("Tell me a long story about a brave little cat".split(), {}, "Tell me a long story about a brave little cat."),
    (
        "Thanks that was lovely what time is it in Tokyo".split(),
        {9: "Kyoto"},
        "Thanks, that was lovely. What time is it in Tokyo?",
    ),
]
BARGE_IN_TURN = 2  # the story is cut short after its first words
PERSONA_SENTENCES = (
    "You are Juniper, a warm and patient voice assistant for a busy household.",
    "You answer in one or two short sentences, because everything you say is read aloud.",
    "You never use lists, markdown, emoji or URLs, and you spell out numbers the way people say them.",
    "When a question is ambiguous you ask one short clarifying question instead of guessing.",
    "You remember what the family told you earlier in the conversation and use it naturally.",
    "You are honest about what you do not know and never invent facts, times or prices.",
    "You keep a calm, friendly tone, even when the user is in a hurry or frustrated.",
)


def persona_text(tokenizer: Any, tokens: int) -> str:
    """A system prompt of at least `tokens` tokens, unique from its first word (no cache is shared)."""
    from yap_engines.chat import count_tokens

    parts = [f"Session {uuid.uuid4().hex[:8]}."]
    i = 0
    while count_tokens(tokenizer, " ".join(parts)) < tokens:
        parts.append(PERSONA_SENTENCES[i % len(PERSONA_SENTENCES)])
        i += 1
    return " ".join(parts)


def interims(words: list[str], revisions: dict[int, str]) -> list[str]:
    """The interim transcripts of one utterance: a word more each time, a revised word first as heard."""
    out = []
    for n in range(1, len(words) + 1):
        heard = [revisions.get(i, w) if i == n - 1 else w for i, w in enumerate(words[:n])]
        out.append(" ".join(heard))
    return out


class Talker:
    """A `/ws` client that keeps the last `prefill` ack."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.warm_acks: list[dict[str, Any]] = []

    async def send(self, kind: str, rid: str, **payload: Any) -> None:
        await self.ws.send(json.dumps({"type": kind, "session_id": "bench", "request_id": rid, "payload": payload}))

    async def recv(self) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self.ws.recv(), 600))
        if frame["type"] == "ack" and frame["payload"].get("for") == "prefill":
            self.warm_acks.append(frame["payload"])
        return dict(frame)

    async def until(self, rid: str, kinds: tuple[str, ...]) -> dict[str, Any]:
        while True:
            frame = await self.recv()
            if frame.get("request_id") == rid and frame["type"] in kinds:
                return frame

    async def drain(self, seconds: float) -> None:
        """Read (and keep the acks of) what arrives for `seconds`."""
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            try:
                await self.recv_within(left)
            except TimeoutError:
                return

    async def recv_within(self, seconds: float) -> dict[str, Any]:
        async with asyncio.timeout(seconds):
            return await self.recv()


async def run_script(origin: str, key: str, persona: str, warms: bool, word_s: float, max_tokens: int) -> list[dict]:
    """One session through `TURNS`; the measurements of each turn."""
    import websockets

    turns = []
    async with websockets.connect(f"{origin}/ws?api_key={key}", max_size=2**22) as ws:
        talk = Talker(ws)
        await talk.send("start", "start", chat_prompt=persona)
        await talk.until("start", ("ack",))
        for index, (words, revisions, final) in enumerate(TURNS):
            talk.warm_acks.clear()
            for n, interim in enumerate(interims(words, revisions)):
                if warms:
                    await talk.send("prefill", f"w{index}-{n}", user_utterance=interim)
                await talk.drain(word_s)  # the user is still speaking
            rid = f"t{index}"
            sent = time.perf_counter()
            await talk.send(
                "message", rid, user_utterance=final, sampling={"temperature": 0.0, "max_tokens": max_tokens}
            )
            first = await talk.until(rid, ("token", "done", "error"))
            ttft_ms = (time.perf_counter() - sent) * 1000
            if first["type"] == "error":
                raise RuntimeError(f"turn {index} failed: {first['payload']}")
            if index == BARGE_IN_TURN and first["type"] == "token":
                await talk.send("cancel", rid, spoken_text=first["payload"]["text"])
                end = await talk.until(rid, ("done", "cancelled", "error"))
                usage = end["payload"].get("usage") or {}
            else:
                end = first if first["type"] == "done" else await talk.until(rid, ("done", "error"))
                usage = end["payload"].get("usage") or {}
            turns.append(
                {
                    "turn": index + 1,
                    "ttft_ms": round(ttft_ms, 1),
                    "ended": end["type"],
                    "prompt_tokens": usage.get("prompt_tokens"),
                    "cached_tokens": usage.get("cached_tokens"),
                    "warm_prompt_tokens": talk.warm_acks[-1]["prompt_tokens"] if talk.warm_acks else None,
                    "warm_cached_tokens": talk.warm_acks[-1]["cached_tokens"] if talk.warm_acks else None,
                }
            )
    return turns


def cpu_description() -> dict[str, Any]:
    """The machine: cores, CPU model, the bf16-relevant flags, the load."""
    from yap_engines.dtype import NATIVE_BF16_FLAGS, cpu_flags

    flags = cpu_flags()
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        "unknown",
    )
    shown = sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_vnni", *NATIVE_BF16_FLAGS})
    return {"model": model, "cores": os.cpu_count(), "flags": shown, "load_average": os.getloadavg()}


def summarize(turns: list[dict[str, Any]], block: int) -> dict[str, Any]:
    """First-turn and median first-token latency; in how many turns the cache held the last warm's prompt
    minus one block (turns cut by the barge-in report no usage and are left out)."""
    measured = [t for t in turns if t["cached_tokens"] is not None]
    ok = [
        t["warm_prompt_tokens"] is not None and t["cached_tokens"] >= t["warm_prompt_tokens"] - block for t in measured
    ]
    return {
        "first_turn_ttft_ms": turns[0]["ttft_ms"],
        "median_ttft_ms": statistics.median(t["ttft_ms"] for t in turns),
        "cache_target_met": f"{sum(ok)}/{len(ok)}",
    }


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    from yap_cli.loopback import serve_on_loopback
    from yap_engines import EngineSettings, FakeEngine, load_engine
    from yap_engines.protocol import ReportsDtype
    from yap_server.app import create_app
    from yap_server.settings import ServerSettings

    key = "bench-voice"
    if args.engine == "fake":
        engine: Any = FakeEngine(
            text="Sure, here is a short answer for you.",
            tokens_per_s=50,
            prefill_s_per_token=args.fake_prefill_ms_per_token / 1000,
            cache_block_size=16,
        )
        block = engine.cache_block_size
    else:
        engine = load_engine("vllm", **({"model": args.model} if args.model else {}), vllm_max_num_seqs=8)
        block = engine.cache_block_size
    try:
        report: dict[str, Any] = {
            "engine": args.engine,
            "model": engine.model_id,
            "dtype": engine.dtype_choice.as_dict() if isinstance(engine, ReportsDtype) else None,
            "cache_block_size": block,
            "machine": cpu_description(),
            "word_ms": args.word_ms,
            "runs": {},
        }
        for warms in (False, True):
            settings = ServerSettings.from_env(
                text_api_key=key,
                max_concurrent_connections=4,
                deploy_mode="chat",
                ws_idle_timeout_s=900,
                ws_warm_after_start=warms,
                ws_warm_after_turn=warms,
            )
            budgets = EngineSettings.from_env(chat_max_len=4096)
            app = create_app(settings, engines={"chat": engine}, engine_settings=budgets)
            persona = persona_text(engine.tokenizer, args.persona_tokens)
            async with serve_on_loopback(app) as port:
                turns = await run_script(
                    f"ws://127.0.0.1:{port}", key, persona, warms, args.word_ms / 1000, args.max_tokens
                )
            name = "with_warms" if warms else "without_warms"
            report["runs"][name] = {"turns": turns, "summary": summarize(turns, block)}
        return report
    finally:
        await engine.aclose()


def write_png(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for offset, name in ((-width / 2, "without_warms"), (width / 2, "with_warms")):
        turns = report["runs"][name]["turns"]
        ax.bar([t["turn"] + offset for t in turns], [t["ttft_ms"] for t in turns], width, label=name.replace("_", " "))
    ax.set_xticks([t["turn"] for t in report["runs"]["with_warms"]["turns"]])
    ax.set_xlabel("turn (1: new session; 3: barge-in)")
    ax.set_ylabel("first token after the final message (ms)")
    ax.set_yscale("log")
    machine = report["machine"]
    ax.set_title(f"yap bench voice: {report['engine']} {Path(str(report['model'])).name}, {machine['cores']} cores")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def register(bench_commands: Any) -> None:
    """Register `yap bench voice` under `yap bench`."""
    parser = bench_commands.add_parser("voice", help="first token after people stop speaking, with and without warms")
    parser.add_argument(
        "--engine", choices=("fake", "vllm"), default="fake", help="vllm: MODEL or the embedded default"
    )
    parser.add_argument("--model", help="vllm: the model (default: the embedded SmolLM2-135M-Instruct)")
    parser.add_argument("--persona-tokens", type=int, default=1000, help="system prompt length")
    parser.add_argument("--word-ms", type=float, default=WORD_MS, help="speaking pace: one interim word every this")
    parser.add_argument("--max-tokens", type=int, default=24, help="reply length cap")
    parser.add_argument(
        "--fake-prefill-ms-per-token", type=float, default=5.0, help="fake: compute per uncached prompt token"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/voice"), help="directory for voice.json and voice.png")
    parser.set_defaults(run=_voice_command)


def _voice_command(args: argparse.Namespace) -> int:
    report = asyncio.run(bench(args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "voice.json").write_text(json.dumps(report, indent=2) + "\n")
    write_png(report, args.out / "voice.png")
    print(json.dumps({name: run["summary"] for name, run in report["runs"].items()}, indent=2))
    print(f"wrote {args.out / 'voice.json'} and {args.out / 'voice.png'}")
    return 0
