"""`yap client ...`: the seed systems' test clients for a running Yap server, over a real WebSocket.

Every command shares the flags and environment variables of `options` (`--server`/`SERVER_WS_URL`,
`--api-key`/`TEXT_API_KEY`, `--gender`/`GENDER`, `--personality`/`PERSONALITY`, `RECV_TIMEOUT_SEC`,
the sampling overrides), prints what it measured and, last, its JSON report (`--json`: only that).

Exit status: 0 when every check passed; 1 when the report lists `failures` (a turn that did not end
`done`, a protocol violation, a missing or malformed tool decision, ...) or the client could not run
(connection refused, receive timeout, a refused `start`); 2 for bad flags.

| module | commands |
|---|---|
| `latency` | warmup, conversation, history, bench |
| `checks` | cancel, idle, personality |
| `tools` | vision, screen-analysis, tool |
| `live` | live |
| `..client_completions` | completions (`/ws/completions`) |
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from ..client_completions import add_completions_command
from .checks import cancel, idle, personality
from .core import ServerError, TurnResult, YapClient, tool_decision, ws_url
from .latency import bench, conversation, history, warmup
from .live import live
from .options import add_common_flags, env_defaults, normalize_gender, sampling_of, start_payload
from .report import summarize
from .scripts import PERSONA, SCREEN_ANALYSIS, SCREEN_REQUEST, WARMUP_MESSAGE
from .tools import screen_analysis, tool, vision

__all__ = [
    "ServerError",
    "TurnResult",
    "YapClient",
    "bench",
    "cancel",
    "client_parser",
    "conversation",
    "env_defaults",
    "history",
    "idle",
    "live",
    "normalize_gender",
    "personality",
    "sampling_of",
    "screen_analysis",
    "start_payload",
    "summarize",
    "tool",
    "tool_decision",
    "vision",
    "warmup",
    "ws_url",
]

Command = Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]
COMMANDS: dict[str, Command] = {
    "warmup": warmup,
    "conversation": conversation,
    "history": history,
    "bench": bench,
    "cancel": cancel,
    "idle": idle,
    "personality": personality,
    "vision": vision,
    "screen-analysis": screen_analysis,
    "tool": tool,
    "live": live,
}
ALIASES = {"screen-analysis": ["screen_analysis"]}
OWN_TIMEOUT = ("bench", "history", "tool")
"""Commands whose `--timeout` is their own (per session / per tool decision), not `--recv-timeout`."""


def _add_load_flags(command: argparse.ArgumentParser, sessions: int, concurrency: int) -> None:
    command.add_argument(
        "-n", "--sessions", type=int, default=sessions, help=f"connections in all (default {sessions})"
    )
    command.add_argument(
        "-c", "--concurrency", type=int, default=concurrency, help=f"connections at once (default {concurrency})"
    )
    command.add_argument("--timeout", type=float, default=180.0, help="seconds each connection may take (default 180)")


def _add_command_flags(sub: dict[str, argparse.ArgumentParser]) -> None:
    """The flags of each command besides the shared ones."""
    sub["warmup"].add_argument("message", nargs="?", default=WARMUP_MESSAGE, help="what to say")
    sub["warmup"].add_argument(
        "--double-ttfb", action="store_true", help="send the same request twice back-to-back (cold vs warm)"
    )
    sub["conversation"].add_argument("--turns", type=int, default=10, help="turns of the script to run")
    sub["history"].add_argument(
        "--bench", action="store_true", help="many connections at once, each with the warm history"
    )
    _add_load_flags(sub["history"], 8, 4)
    sub["bench"].add_argument("message", nargs="?", help="what every session says (default: lines of the script)")
    sub["bench"].add_argument(
        "--double-ttfb", action="store_true", help="two sequential transactions per connection (cold vs warm)"
    )
    _add_load_flags(sub["bench"], 20, 5)
    sub["cancel"].add_argument("--clients", type=int, default=1, help="clients cancelling at once (default 1)")
    sub["cancel"].add_argument(
        "--cancel-delay", type=float, default=0.0, help="seconds after the first token to cancel (default 0)"
    )
    sub["cancel"].add_argument(
        "--drain-timeout",
        type=float,
        default=1.0,
        help="seconds to listen for stray frames after cancelled (default 1)",
    )
    sub["idle"].add_argument(
        "--normal-wait", type=float, default=3.0, help="seconds open before sending end (default 3)"
    )
    sub["idle"].add_argument(
        "--idle-expect-seconds", type=float, default=150.0, help="the server's idle timeout (default 150)"
    )
    sub["idle"].add_argument(
        "--idle-grace-seconds", type=float, default=15.0, help="slack either side of it before failing (default 15)"
    )
    sub["personality"].add_argument("--switches", type=int, default=3, help="personality changes (default 3)")
    sub["personality"].add_argument("--delay", type=float, default=2.0, help="seconds between changes (default 2)")
    for name in ("vision", "screen-analysis"):
        sub[name].add_argument("message", nargs="?", default=SCREEN_REQUEST, help="a request to look at the screen")
    sub["screen-analysis"].add_argument(
        "--analysis-text", default=SCREEN_ANALYSIS, help="the followup's analysis_text (what the screen shows)"
    )
    sub["tool"].add_argument("--timeout", type=float, default=5.0, help="seconds to wait per tool decision (default 5)")
    sub["tool"].add_argument("--concurrency", type=int, default=4, help="cases replayed at once")
    sub["tool"].add_argument("--limit", type=int, default=0, help="replay only the first N cases")
    sub["tool"].add_argument("--max-steps", type=int, default=0, help="replay at most N steps of each case (0: all)")
    sub["tool"].add_argument(
        "--min-accuracy",
        type=float,
        default=0.0,
        help="fail when step accuracy is below this fraction (default 0: accuracy is reported only)",
    )
    live_command = sub["live"]
    live_command.add_argument("opener", nargs="?", help="a first message to send before reading input")
    live_command.add_argument("-p", "--persona", default=PERSONA, help="the system prompt (chat_prompt)")
    live_command.add_argument("--warm", action="store_true", help="start with a pre-built history (test recall)")
    live_command.add_argument("--max-tokens", type=int, help="reply cap in tokens (default: the server's)")
    live_command.add_argument(
        "--interrupt",
        action="store_true",
        help="let a line read from a pipe barge in on a streaming reply (always so on a terminal)",
    )


def register(commands: Any) -> None:
    """Register `yap client <command>` on the CLI's subparsers."""
    parser = commands.add_parser("client", help="test clients for a running server")
    sub = parser.add_subparsers(dest="client_command", required=True)
    for name, fn in COMMANDS.items():
        command = sub.add_parser(name, aliases=ALIASES.get(name, []), help=(fn.__doc__ or name).strip().splitlines()[0])
        add_common_flags(command, timeout_alias=name not in OWN_TIMEOUT)
        command.set_defaults(run=run_client, client_fn=fn)
    _add_command_flags({name: sub.choices[name] for name in COMMANDS})
    add_completions_command(sub)


def client_parser() -> argparse.ArgumentParser:
    """A parser of `yap client ...` alone (tests and scripts build a command's namespace with it)."""
    parser = argparse.ArgumentParser(prog="yap")
    register(parser.add_subparsers(dest="command", required=True))
    return parser


def run_client(args: argparse.Namespace) -> int:
    """Run the command, print its JSON report last; exit 1 when it lists failures or could not run."""
    try:
        report = asyncio.run(args.client_fn(args))
    except Exception as exc:  # refused connection, receive timeout, refused start, closed socket: exit non-zero
        report = {"failures": [f"{type(exc).__name__}: {exc}"]}
    print(json.dumps(report, default=str, ensure_ascii=False), flush=True)
    for why in report.get("failures", []):
        print(f"FAIL: {why}", file=sys.stderr)
    return 1 if report.get("failures") else 0
