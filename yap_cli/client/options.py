"""The flags and environment variables every `yap client` command shares, as the seed's clients read them,
and the connection/session they describe.

| flag | env | default |
|---|---|---|
| `--server` (alias `--url`): origin or full URL, `/ws` appended | `SERVER_WS_URL` | `ws://127.0.0.1:8000/ws` |
| `--api-key` (alias `--key`) | `TEXT_API_KEY` | none |
| `--gender` (aliases woman→female, man→male) | `GENDER` | `female` |
| `--personality` (alias `--style`) | `PERSONALITY`, then `PERSONA_STYLE` | `wholesome` |
| `--recv-timeout` (alias `--timeout` where the command has no other `--timeout`) | `RECV_TIMEOUT_SEC` | 60 |
| `--temperature`, `--top-p`/`--top_p`, `--top-k`, `--repeat-penalty` | — | the server's |

The sampling flags go into `start`'s `sampling` (the session's base) under the protocol's names
(`temperature`, `top_p`, `top_k`, `repetition_penalty`); an omitted flag sends nothing.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

from .core import YapClient, ws_url

DEFAULT_SERVER = "ws://127.0.0.1:8000/ws"
DEFAULT_GENDER = "female"
DEFAULT_PERSONALITY = "wholesome"
DEFAULT_RECV_TIMEOUT_S = 60.0
GENDER_ALIASES = {"woman": "female", "man": "male"}
SAMPLING_FLAGS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repeat_penalty": "repetition_penalty",
}
"""argparse dest → the server's `sampling` key."""


def normalize_gender(value: str) -> str:
    """`woman`/`man` as `female`/`male` (case-insensitive); anything else lower-cased as given."""
    value = value.strip().lower()
    return GENDER_ALIASES.get(value, value)


def env_defaults(env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The defaults the environment sets for the shared flags."""
    env = os.environ if env is None else env
    timeout = env.get("RECV_TIMEOUT_SEC")
    return {
        "server": env.get("SERVER_WS_URL") or DEFAULT_SERVER,
        "key": env.get("TEXT_API_KEY"),
        "gender": normalize_gender(env.get("GENDER") or DEFAULT_GENDER),
        "personality": env.get("PERSONALITY") or env.get("PERSONA_STYLE") or DEFAULT_PERSONALITY,
        "recv_timeout": float(timeout) if timeout else DEFAULT_RECV_TIMEOUT_S,
    }


def add_common_flags(command: argparse.ArgumentParser, *, timeout_alias: bool = True) -> None:
    """The shared flags (module docstring), their defaults read from the environment now.
    `timeout_alias`: `--timeout` is another name of `--recv-timeout` (commands with their own `--timeout` say no)."""
    defaults = env_defaults()
    command.add_argument(
        "--server", "--url", default=defaults["server"], help="origin or full URL (env SERVER_WS_URL); /ws is appended"
    )
    command.add_argument("--api-key", "--key", dest="key", default=defaults["key"], help="API key (env TEXT_API_KEY)")
    command.add_argument(
        "--gender", type=normalize_gender, default=defaults["gender"], help="start's gender (env GENDER; woman|man ok)"
    )
    command.add_argument(
        "--personality",
        "--style",
        default=defaults["personality"],
        help="start's personality (env PERSONALITY or PERSONA_STYLE; default wholesome)",
    )
    timeouts = ("--recv-timeout", "--timeout") if timeout_alias else ("--recv-timeout",)
    command.add_argument(
        *timeouts,
        dest="recv_timeout",
        type=float,
        default=defaults["recv_timeout"],
        help="seconds to wait for any one frame (env RECV_TIMEOUT_SEC; default 60)",
    )
    command.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    command.add_argument("--top-p", "--top_p", dest="top_p", type=float, help="sampling top_p")
    command.add_argument("--top-k", "--top_k", dest="top_k", type=int, help="sampling top_k")
    command.add_argument(
        "--repeat-penalty", "--repeat_penalty", dest="repeat_penalty", type=float, help="sampling repetition_penalty"
    )
    command.add_argument("--json", action="store_true", help="print only the JSON report")


def sampling_of(args: argparse.Namespace) -> dict[str, Any]:
    """The `sampling` payload of the sampling flags given (empty when none was)."""
    return {key: value for dest, key in SAMPLING_FLAGS.items() if (value := getattr(args, dest, None)) is not None}


def start_payload(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    """`start`'s payload besides chat_prompt: gender, personality, sampling (when given), and `extra`."""
    payload: dict[str, Any] = {"gender": args.gender, "personality": args.personality}
    if sampling := sampling_of(args):
        payload["sampling"] = sampling
    return {**payload, **extra}


async def connect(args: argparse.Namespace) -> Any:
    """A WebSocket connection to the server `args` name (opening bounded by the receive timeout)."""
    import websockets

    return await websockets.connect(ws_url(args.server, args.key), max_size=None, open_timeout=args.recv_timeout)


@asynccontextmanager
async def session(
    args: argparse.Namespace, persona: str, *, session_id: str | None = None, end: bool = True, **extra: Any
) -> AsyncIterator[tuple[YapClient, dict[str, Any]]]:
    """Connect, `start` a session (`start_payload(args, **extra)`) and yield the client and the ack frame;
    `end` it on the way out when `end` (and the connection is still open)."""
    async with await connect(args) as connection:
        client = YapClient(connection, session_id=session_id, recv_timeout=args.recv_timeout)
        ack = await client.start(persona, **start_payload(args, **extra))
        yield client, ack
        if end and connection.close_code is None:
            await client.end()
