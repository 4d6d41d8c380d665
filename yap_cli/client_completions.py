"""`yap client completions`: one thinking-effort job on `/ws/completions`, encrypting and decrypting.

With `--encryption-key` (env `ORCH_ENCRYPTION_KEY`) the message contents go out as Fernet tokens and
the result's content and thinking are decrypted before printing. The client answers the server's
pings, so long jobs keep the connection alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import uuid
from typing import Any

from yap_server.crypto import ContentCipher

from .urls import endpoint_url


def completions_url(server: str, key: str | None) -> str:
    """The `/ws/completions` URL for a server origin or URL, with `api_key` in the query."""
    return endpoint_url(server, key, "/ws/completions")


def job_frame(
    messages: list[dict[str, str]],
    effort: str,
    response_format: dict[str, Any] | None,
    *,
    cipher: ContentCipher | None = None,
    max_tokens: int | None = None,
    timeout_s: float | None = None,
    client_request_id: str | None = None,
) -> dict[str, Any]:
    """A job frame; contents encrypted when `cipher` is given."""
    if cipher is not None:
        messages = [{**m, "content": cipher.encrypt(m["content"])} for m in messages]
    request: dict[str, Any] = {"messages": messages, "thinking_effort": effort}
    if response_format is not None:
        request["response_format"] = response_format
    if max_tokens is not None:
        request["max_tokens"] = max_tokens
    frame: dict[str, Any] = {"request": request, "client_request_id": client_request_id or uuid.uuid4().hex}
    if timeout_s is not None:
        frame["timeout_seconds"] = timeout_s
    return frame


def decrypted(result_frame: dict[str, Any], cipher: ContentCipher | None) -> dict[str, Any]:
    """The result frame with content and thinking decrypted (unchanged without a cipher or a result)."""
    result = result_frame.get("result")
    if cipher is None or not isinstance(result, dict):
        return result_frame
    for choice in result.get("choices", []):
        message = choice["message"]
        message["content"] = cipher.decrypt(message["content"], "content")
        message["thinking"] = cipher.decrypt(message["thinking"], "thinking")
    return result_frame


async def run_job(url: str, frame: dict[str, Any], cipher: ContentCipher | None, timeout_s: float) -> dict[str, Any]:
    """Send one job and return its result frame (decrypted), answering pings meanwhile."""
    import websockets

    async with websockets.connect(url, max_size=None) as ws:
        await ws.send(json.dumps(frame))
        async with asyncio.timeout(timeout_s):
            while True:
                message = json.loads(await ws.recv())
                if message.get("type") == "ping":
                    await ws.send(json.dumps({"type": "pong"}))
                elif message.get("type") == "result":
                    return decrypted(message, cipher)


def _completions(args: argparse.Namespace) -> int:
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    messages = [{"role": "system", "content": args.system}] if args.system else []
    messages.append({"role": "user", "content": prompt})
    cipher = ContentCipher(args.encryption_key) if args.encryption_key else None
    response_format = json.loads(args.format) if args.format else None
    frame = job_frame(
        messages, args.effort, response_format, cipher=cipher, max_tokens=args.max_tokens, timeout_s=args.timeout
    )
    result = asyncio.run(run_job(completions_url(args.server, args.key), frame, cipher, args.timeout + 10))
    print(json.dumps(result, ensure_ascii=False))
    return 0 if result.get("status") == "completed" else 1


def add_completions_command(client_commands: argparse._SubParsersAction[Any]) -> None:
    """Register `yap client completions` on the `yap client` subcommands."""
    command = client_commands.add_parser("completions", help="one thinking-effort job on /ws/completions")
    command.add_argument("prompt", nargs="?", help="the user message (default: stdin)")
    command.add_argument("--server", default="http://127.0.0.1:8000", help="origin or full URL of the server")
    command.add_argument("--key", default=os.environ.get("TEXT_API_KEY"), help="API key (env TEXT_API_KEY)")
    command.add_argument(
        "--encryption-key",
        default=os.environ.get("ORCH_ENCRYPTION_KEY"),
        help="Fernet key when the server sets ORCH_ENCRYPTION_KEY (env ORCH_ENCRYPTION_KEY)",
    )
    command.add_argument("--effort", choices=["none", "low", "medium", "high"], default="low", help="thinking effort")
    command.add_argument(
        "--format", help='response_format as JSON, e.g. \'{"type": "choice", "choices": ["yes", "no"]}\''
    )
    command.add_argument("--system", help="a system message")
    command.add_argument("--max-tokens", type=int, help="cap of the answer (at most the server's FINAL_MAX_TOKENS)")
    command.add_argument("--timeout", type=float, default=120.0, help="timeout_seconds of the job")
    command.set_defaults(run=_completions)
