"""The chat-completions harness: one-shot runs against any engine, with a fixed JSON result.

A *target* is an engine spec: `openai:http://host:port` (the `openai` remote engine, any
OpenAI-compatible server) or an in-process engine name (`fake`, `vllm`, `trt`) plus a model.
`run_turn` sends one conversation and returns a `TurnOutcome`; `infer_record` turns it into the
result `yap infer` prints, with exactly the fields below. Statuses come from their real causes:

- `ok`: the reply finished (`stop_reason` stop or length; abort when the engine aborted it).
- `http_error`: the target refused or failed the request: a non-2xx answer (`http_status` set,
  e.g. 401 for a wrong key), no connection, or an engine error (`http_status` null).
- `timeout`: no reply within the deadline, or the server went silent past its read timeout.
- `schema_error`: the answer was not a chat-completions stream (bad JSON, missing fields, no end).

Thinking split (`split_reply`): the server's separate reasoning field wins; else the text before
the last `</think>` is reasoning (a missing opening tag is normal); a reply cut by the token cap
inside its thinking is all reasoning, with no content (`cut_in_thinking`). Only the content goes
into the next turn's history (see `yap_engines.harness.scenario`).

The result follows the seed harness's return schema to the letter: ISO 8601 `…Z` timestamps, `null`
for absent reasoning, `thinking_hint` `"qwen-thinking"` or `null`, and time windows for the
Prometheus bookmark and the log anchor. A failed request adds `error`, the server's own message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import EngineError
from ..protocol import InferenceEngine, consume
from ..thinking import CLOSE_TAG, OPEN_TAG, split_thinking
from ..types import ChatRequest, Delta, FinishReason, Sampling, Usage
from .artifacts import iso_z, write_test_artifacts

Status = Literal["ok", "http_error", "timeout", "schema_error"]
StopReason = Literal["stop", "length", "abort"]
ModelKind = Literal["thinking", "instruct"]

MODEL_KIND_SAMPLING: dict[str, dict[str, Any]] = {
    "thinking": {"temperature": 0.6, "top_p": 0.95, "max_tokens": 4096},
    "instruct": {"temperature": 0.7, "top_p": 0.8, "max_tokens": 1024},
}
THINKING_HINT: dict[str, str | None] = {"thinking": "qwen-thinking", "instruct": None}
_STOP: dict[FinishReason, StopReason] = {"stop": "stop", "length": "length", "cancelled": "abort", "error": "abort"}


def default_sampling(kind: ModelKind, overrides: Mapping[str, Any] | None = None) -> Sampling:
    """Sampling for a model kind (thinking: 0.6/0.95, generous `max_tokens`; instruct: 0.7/0.8), then `overrides`."""
    if kind not in MODEL_KIND_SAMPLING:
        raise ValueError(f"model kind must be 'thinking' or 'instruct', got {kind!r}")
    return Sampling(**MODEL_KIND_SAMPLING[kind]).merged(overrides or {})


@dataclass
class Target:
    """An engine to run against, plus the tokenizer that renders prompts for in-process engines."""

    engine: InferenceEngine
    label: str
    tokenizer: Any = None
    remote: bool = False

    async def aclose(self) -> None:
        await self.engine.aclose()


def open_target(
    spec: str, *, model: str | None = None, api_key: str | None = None, read_timeout_s: float | None = None
) -> Target:
    """Build the engine an engine spec names: `openai:http://host:port`, or `fake` / `vllm` / `trt` (+ `model`)."""
    if spec.startswith("openai:"):
        from ..adapters.openai import RemoteEngine

        url = spec.removeprefix("openai:")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"--target {spec!r}: expected openai:http://host:port")
        remote = RemoteEngine(url, api_key=api_key, model=model, read_timeout_s=read_timeout_s or 60.0)
        return Target(remote, spec, remote=True)
    from ..registry import load_engine

    engine = load_engine(spec, model=model) if model else load_engine(spec)
    return Target(engine, spec, tokenizer=getattr(engine, "tokenizer", None))


def build_messages(
    system: str | None, context: str | None, prompt: str, history: Sequence[Mapping[str, str]] = ()
) -> list[dict[str, str]]:
    """System message, prior turns, then the user turn (`context`, a blank line, `prompt`)."""
    user = f"{context}\n\n{prompt}" if context else prompt
    head = [{"role": "system", "content": system}] if system else []
    return [*head, *(dict(m) for m in history), {"role": "user", "content": user}]


@dataclass(frozen=True)
class ReplySplit:
    reasoning: str
    content: str
    cut_in_thinking: bool


def split_reply(
    raw: str, finish: FinishReason | None, kind: ModelKind, server: tuple[str, str] | None = None
) -> ReplySplit:
    """Reasoning and content of a reply (rules in the module docstring).

    `server` is the (reasoning, content) the server itself separated, when it did.
    """
    cut = finish == "length"
    if server is not None and server[0]:
        reasoning, content = server
        return ReplySplit(reasoning, content, cut and not content)
    if CLOSE_TAG in raw or raw.lstrip().startswith(OPEN_TAG):
        split = split_thinking(raw)
        return ReplySplit(split.reasoning, split.content, cut and CLOSE_TAG not in raw)
    if kind == "thinking" and cut:
        return ReplySplit(raw, "", True)  # opening tag prefilled by the template, never closed
    return ReplySplit("", raw, False)


@dataclass
class TurnOutcome:
    """What one request produced, however it ended."""

    status: Status
    http_status: int | None
    stop_reason: StopReason
    usage: Usage
    start_ts: float
    end_ts: float
    raw: str = ""
    split: ReplySplit = field(default_factory=lambda: ReplySplit("", "", False))
    error: str | None = None

    @property
    def total_latency_ms(self) -> float:
        return round((self.end_ts - self.start_ts) * 1000, 3)

    def usage_record(self) -> dict[str, int]:
        return {"prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens}

    def timings(self) -> dict[str, Any]:
        return {**self.window(), "total_latency_ms": self.total_latency_ms}

    def window(self) -> dict[str, str]:
        return {"start_ts": iso_z(self.start_ts), "end_ts": iso_z(self.end_ts)}

    def transcript_entry(self, index: int, messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """This turn as `transcript.json` records it."""
        return {
            "turn": index,
            "messages_sent": [dict(m) for m in messages],
            "status": self.status,
            "http_status": self.http_status,
            "stop_reason": self.stop_reason,
            "assistant_text_raw": self.raw,
            "assistant_reasoning_text": self.split.reasoning or None,
            "assistant_content_text": self.split.content,
            "cut_in_thinking": self.split.cut_in_thinking,
            "error": self.error,
            "usage": self.usage_record(),
            "timings": self.timings(),
        }


def _failure(exc: BaseException) -> tuple[Status, int | None]:
    from ..adapters.openai import RemoteProtocolError

    if isinstance(exc, TimeoutError):
        return "timeout", None
    if isinstance(exc, RemoteProtocolError):
        return "schema_error", 200
    return "http_error", getattr(exc, "status_code", None)


async def run_turn(
    target: Target,
    messages: Sequence[Mapping[str, str]],
    sampling: Sampling,
    *,
    kind: ModelKind = "instruct",
    timeout_s: float | None = None,
    session_id: str | None = None,
) -> TurnOutcome:
    """Send one conversation to the target and collect the reply, classifying any failure.

    In-process targets get the messages rendered to token ids with their tokenizer; remote ones get
    the messages. Deltas that carry the server's own split (`reasoning`/`content`, as the remote
    engine's do) feed the thinking split; `timeout_s` bounds the whole request, for any engine.
    """
    ids: tuple[int, ...] = ()
    if target.tokenizer is not None and not target.remote:
        from ..chat import render_ids

        ids = tuple(render_ids(target.tokenizer, messages))
    request = ChatRequest(f"h-{uuid.uuid4().hex}", ids, sampling, messages=messages, session_id=session_id)
    raw, server_reasoning, server_content, server_split = "", "", "", False
    finish: FinishReason | None = None
    usage = Usage(len(ids), 0)

    async def on_delta(delta: Delta) -> bool:
        nonlocal raw, server_reasoning, server_content, server_split, finish, usage
        raw += delta.text
        if hasattr(delta, "reasoning"):  # the remote engine's own split of this chunk
            server_split = True
            server_reasoning += delta.reasoning
            server_content += delta.content  # type: ignore[attr-defined]
        if delta.finished:
            finish, usage = delta.finish_reason, delta.usage or usage
        return True

    start = time.time()
    try:
        async with asyncio.timeout(timeout_s):  # None: no deadline
            await consume(target.engine, request, on_delta)
    except (EngineError, TimeoutError) as exc:
        status, http_status = _failure(exc)
        return TurnOutcome(status, http_status, "abort", usage, start, time.time(), raw, error=str(exc) or repr(exc))
    server = (server_reasoning, server_content) if server_split else None
    split = split_reply(raw, finish, kind, server)
    stop = _STOP[finish] if finish is not None else "abort"
    return TurnOutcome("ok", 200 if target.remote else None, stop, usage, start, time.time(), raw, split)


@dataclass(frozen=True)
class Bookmark:
    """Where a run's server telemetry lives: the managed server's run id and log file (from its manifest)."""

    run_id: str | None = None
    log_file: str | None = None


async def fit_max_tokens(target: Target, sampling: Sampling, overrides: Mapping[str, Any]) -> Sampling:
    """Lower a *default* `max_tokens` to the output cap a remote server publishes for its model
    (`max_completion_tokens` in its `/v1/models` entry, as Yap's server does). An explicit
    `max_tokens` is sent as given: a server that refuses it says why in the result's `error`."""
    if not target.remote or "max_tokens" in overrides or sampling.max_tokens is None:
        return sampling
    from ..adapters.openai import RemoteEngine
    from ..replicas import ReplicatedEngine

    engine = target.engine.first if isinstance(target.engine, ReplicatedEngine) else target.engine
    if not isinstance(engine, RemoteEngine):
        return sampling
    try:
        entry = await engine.model_entry()
    except EngineError:
        return sampling  # the request itself will report the failure
    cap = entry.get("max_completion_tokens")
    if isinstance(cap, int) and 0 < cap < sampling.max_tokens:
        return sampling.merged({"max_tokens": cap})
    return sampling


def infer_record(
    test_id: str,
    outcome: TurnOutcome,
    *,
    system: str | None,
    context: str | None,
    prompt: str,
    sampling: Sampling,
    kind: ModelKind,
    bookmark: Bookmark,
) -> dict[str, Any]:
    """The `yap infer` result: exactly the seed harness's fields, plus `error` when the request failed."""
    record: dict[str, Any] = {
        "test_id": test_id,
        "status": outcome.status,
        "http_status": outcome.http_status,
        "stop_reason": outcome.stop_reason,
        "usage": outcome.usage_record(),
        "timings": outcome.timings(),
        "request_snapshot": {
            "system": system,
            "context": context,
            "prompt": prompt,
            "sampling": sampling.as_dict(),
            "thinking_hint": THINKING_HINT[kind],
        },
        "response_snapshot": {
            "assistant_text_raw": outcome.raw,
            "assistant_reasoning_text": outcome.split.reasoning or None,
            "assistant_content_text": outcome.split.content,
        },
        "prom_bookmark": {"container_run_id": bookmark.run_id, "window": outcome.window()},
        "container_log_anchor": {"path": bookmark.log_file, "window": outcome.window()},
    }
    if outcome.status != "ok":
        record["error"] = outcome.error
    return record


async def infer(
    target: Target,
    *,
    prompt: str,
    system: str | None = None,
    context: str | None = None,
    sampling: Sampling | None = None,
    overrides: Mapping[str, Any] | None = None,
    kind: ModelKind = "instruct",
    timeout_s: float | None = None,
    test_id: str | None = None,
    bookmark: Bookmark | None = None,
    artifacts_dir: Path | None = None,
) -> dict[str, Any]:
    """One-shot: run one prompt against `target` and return the `yap infer` result.

    `sampling` is sent as given; without it, the model kind's defaults with `overrides` on top, a
    default `max_tokens` fitted to the server's published cap. With `artifacts_dir`, the test's
    `transcript.json` and `metrics.json` go to `artifacts_dir/<test_id>/`, as a scenario's do.
    """
    bookmark = bookmark or Bookmark()
    if sampling is None:
        sampling = await fit_max_tokens(target, default_sampling(kind, overrides), overrides or {})
    messages = build_messages(system, context, prompt)
    outcome = await run_turn(target, messages, sampling, kind=kind, timeout_s=timeout_s)
    record = infer_record(
        test_id or f"infer-{uuid.uuid4().hex[:8]}",
        outcome,
        system=system,
        context=context,
        prompt=prompt,
        sampling=sampling,
        kind=kind,
        bookmark=bookmark,
    )
    if artifacts_dir is not None:
        write_test_artifacts(
            artifacts_dir / record["test_id"],
            record=record,
            target=target.label,
            turns=[outcome.transcript_entry(0, messages)],
            turns_planned=1,
        )
    return record
