"""The harness against Yap's own /v1/chat/completions (a scripted thinking engine behind it), through the
remote engine: the thinking split, content-only continuation, artifacts, and every status from its cause."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

from harness_support import CAPPED_MAX_OUT, KEY, YapTarget, fields, yap_cli

from yap_engines import FakeEngine
from yap_engines.harness.run import Bookmark, Target, default_sampling, infer, open_target, split_reply
from yap_engines.harness.scenario import load_scenario, run_scenario

ISO_Z = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")

INFER_SHAPE = {
    "test_id": None,
    "status": None,
    "http_status": None,
    "stop_reason": None,
    "usage": ["completion_tokens", "prompt_tokens"],
    "timings": ["end_ts", "start_ts", "total_latency_ms"],
    "request_snapshot": ["context", "prompt", "sampling", "system", "thinking_hint"],
    "response_snapshot": ["assistant_content_text", "assistant_reasoning_text", "assistant_text_raw"],
    "prom_bookmark": ["container_run_id", "window"],
    "container_log_anchor": ["path", "window"],
}


def test_split_rules_without_a_server_field() -> None:
    assert split_reply("<think>a</think>b</think>c", "stop", "instruct") == split_reply(
        "a</think>b</think>c", "stop", "instruct"
    )
    last = split_reply("a</think>b</think>c", "stop", "instruct")
    assert (last.reasoning, last.content, last.cut_in_thinking) == ("a</think>b", "c", False)
    cut = split_reply("<think>still going", "length", "instruct")
    assert (cut.reasoning, cut.content, cut.cut_in_thinking) == ("still going", "", True)
    prefilled = split_reply("thinking with the tag in the prompt", "length", "thinking")
    assert (prefilled.content, prefilled.cut_in_thinking) == ("", True)
    plain = split_reply("just an answer", "length", "instruct")
    assert (plain.reasoning, plain.content, plain.cut_in_thinking) == ("", "just an answer", False)
    server = split_reply("<think>r</think>x</think>y", "stop", "thinking", server=("r", "x</think>y"))
    assert (server.reasoning, server.content) == ("r", "x</think>y")


async def test_yap_infer_prints_exactly_the_documented_fields(yap: YapTarget) -> None:
    code, out, err = await yap_cli(
        "infer", "--target", f"openai:{yap.url}", "--api-key", KEY, "--system", "Be brief.",
        "--context", "The sky is blue.", "--prompt", "What colour is the sky?", "--test-id", "sky",
        "--temperature", "0.2", "--max-tokens", "50",
    )  # fmt: skip
    assert code == 0, err
    record = json.loads(out)
    assert fields(record) == INFER_SHAPE
    assert (record["test_id"], record["status"], record["http_status"], record["stop_reason"]) == (
        "sky",
        "ok",
        200,
        "stop",
    )
    assert record["response_snapshot"] == {
        "assistant_text_raw": "<think>plan1 hidden</think>Answer 1.",
        "assistant_reasoning_text": "plan1 hidden",
        "assistant_content_text": "Answer 1.",
    }
    snapshot = record["request_snapshot"]
    assert (snapshot["system"], snapshot["context"], snapshot["thinking_hint"]) == (
        "Be brief.",
        "The sky is blue.",
        None,
    )
    assert snapshot["sampling"]["temperature"] == 0.2 and snapshot["sampling"]["top_p"] == 0.8
    assert record["usage"]["completion_tokens"] == 6 and record["usage"]["prompt_tokens"] > 0
    timings = record["timings"]
    assert ISO_Z.fullmatch(timings["start_ts"]) and ISO_Z.fullmatch(timings["end_ts"])
    assert timings["end_ts"] >= timings["start_ts"] and timings["total_latency_ms"] > 0
    assert record["prom_bookmark"]["window"] == {"start_ts": timings["start_ts"], "end_ts": timings["end_ts"]}
    assert record["container_log_anchor"] == {"path": None, "window": record["prom_bookmark"]["window"]}
    # The engine saw the system prompt and the context before the question, and nothing else.
    assert (
        "Be brief." in yap.script.prompts[0] and "The sky is blue.\n\nWhat colour is the sky?" in yap.script.prompts[0]
    )


async def test_scenario_splits_continues_with_content_only_and_writes_artifacts(yap: YapTarget, tmp_path: Path) -> None:
    scenario_file = tmp_path / "scenario.yaml"
    scenario_file.write_text(
        "run_id: r1\n"
        "defaults:\n"
        "  system: You are terse.\n"
        "  model_kind: thinking\n"
        "  sampling: {max_tokens: 40}\n"
        "tests:\n"
        "  - id: chat\n"
        "    context: Context line.\n"
        "    turns: ['First question?', 'Second question?', 'Third question?']\n"
        "  - id: cut\n"
        "    turns: ['THINK FOREVER please', 'And now?']\n"
        "    sampling: {max_tokens: 12}\n"
        "  - id: untagged\n"
        "    prompt: NO OPENING TAG here\n"
    )
    code, out, err = await yap_cli(
        "scenario",
        "run",
        str(scenario_file),
        "--target",
        f"openai:{yap.url}",
        "--api-key",
        KEY,
        "--runs-dir",
        str(tmp_path / "runs"),
    )
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line.get("test_id") for line in lines[:3]] == ["chat", "cut", "untagged"]
    assert lines[3] == {
        "summary": True, "run_id": "r1", "target": f"openai:{yap.url}", "tests": 3, "by_status": {"ok": 3},
        "artifacts_dir": str(tmp_path / "runs" / "r1" / "inference"),
    }  # fmt: skip

    # Content-only continuation: later prompts carry earlier answers, never their reasoning.
    first, second, third, cut_first, cut_second, untagged = yap.script.prompts
    assert "Context line.\n\nFirst question?" in first
    assert "Answer 1." in second and "Answer 2." in third and "Answer 1." in third
    assert not any(word in p for p in (second, third) for word in ("plan1", "plan2", "hidden", "think>"))
    assert "Context line." not in cut_first
    assert "secret" not in cut_second and "THINK FOREVER please" in cut_second

    base = tmp_path / "runs" / "r1" / "inference"
    chat = json.loads((base / "chat" / "transcript.json").read_text())
    assert [t["assistant_content_text"] for t in chat["turns"]] == ["Answer 1.", "Answer 2.", "Answer 3."]
    assert [t["assistant_reasoning_text"] for t in chat["turns"]] == ["plan1 hidden", "plan2 hidden", "plan3 hidden"]
    assert chat["turns"][2]["messages_sent"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Context line.\n\nFirst question?"},
        {"role": "assistant", "content": "Answer 1."},
        {"role": "user", "content": "Second question?"},
        {"role": "assistant", "content": "Answer 2."},
        {"role": "user", "content": "Third question?"},
    ]
    metrics = json.loads((base / "chat" / "metrics.json").read_text())
    assert (metrics["status"], metrics["turns_run"], metrics["turns_planned"]) == ("ok", 3, 3)
    assert metrics["usage"]["completion_tokens"] == sum(t["usage"]["completion_tokens"] for t in chat["turns"]) == 18

    cut = json.loads((base / "cut" / "transcript.json").read_text())["turns"][0]
    assert (cut["stop_reason"], cut["cut_in_thinking"], cut["assistant_content_text"]) == ("length", True, "")
    assert cut["assistant_reasoning_text"].split() == [f"secret{i}" for i in range(12)]
    assert lines[1]["stop_reason"] == "stop" and lines[1]["response_snapshot"]["assistant_content_text"] == "Answer 5."

    untagged_turn = json.loads((base / "untagged" / "transcript.json").read_text())["turns"][0]
    assert (untagged_turn["assistant_reasoning_text"], untagged_turn["assistant_content_text"]) == (
        " reasoned quietly",
        "Final word.",
    )
    assert "NO OPENING TAG" in untagged


async def test_a_wrong_key_is_an_http_error(yap: YapTarget) -> None:
    target = open_target(f"openai:{yap.url}", api_key="not-the-key")
    try:
        record = await infer(target, prompt="Hello?")
    finally:
        await target.aclose()
    assert (record["status"], record["http_status"], record["stop_reason"]) == ("http_error", 401, "abort")
    assert "401" in record["error"] and "key" in record["error"].lower()  # the server's own explanation
    assert record["response_snapshot"]["assistant_reasoning_text"] is None
    assert yap.script.prompts == []


async def test_yap_infer_with_defaults_fits_the_servers_output_cap(capped_yap: YapTarget, tmp_path: Path) -> None:
    """The instruct default (1024 tokens) is above this server's CHAT_MAX_OUT: the harness reads the cap
    from the server's /v1/models entry and sends that instead, and the model defaults to its first entry."""
    code, out, err = await yap_cli(
        "infer", "--target", f"openai:{capped_yap.url}", "--api-key", KEY, "--prompt", "Hi", "--runs-dir", str(tmp_path)
    )
    assert code == 0, err
    record = json.loads(out)
    assert (record["status"], record["http_status"]) == ("ok", 200)
    assert record["request_snapshot"]["sampling"]["max_tokens"] == CAPPED_MAX_OUT
    assert record["response_snapshot"]["assistant_reasoning_text"] == "plan1 hidden"
    assert record["response_snapshot"]["assistant_content_text"] == "Answer 1."
    run_dirs = await asyncio.to_thread(lambda: list(tmp_path.glob("run-*/inference/*")))
    assert [p.name for p in run_dirs] == [record["test_id"]]
    assert json.loads((run_dirs[0] / "metrics.json").read_text())["status"] == "ok"


async def test_an_explicit_max_tokens_over_the_cap_reports_the_servers_message(capped_yap: YapTarget) -> None:
    target = open_target(f"openai:{capped_yap.url}", api_key=KEY)
    try:
        record = await infer(target, prompt="Hi", overrides={"max_tokens": 1024})
    finally:
        await target.aclose()
    assert (record["status"], record["http_status"]) == ("http_error", 400)
    assert f"CHAT_MAX_OUT={CAPPED_MAX_OUT}" in record["error"]


async def test_a_silent_server_is_a_timeout(slow_yap: YapTarget) -> None:
    target = open_target(f"openai:{slow_yap.url}", api_key=KEY, read_timeout_s=0.5)
    try:
        record = await infer(target, prompt="Hello?", sampling=default_sampling("instruct", {"max_tokens": 5}))
    finally:
        await target.aclose()
    assert (record["status"], record["http_status"], record["stop_reason"]) == ("timeout", None, "abort")
    assert 400 < record["timings"]["total_latency_ms"] < 4000
    assert slow_yap.slow is not None
    for _ in range(100):  # the client went away: Yap aborts the engine request
        if slow_yap.slow.num_unfinished_requests() == 0:
            break
        await asyncio.sleep(0.05)
    assert slow_yap.slow.num_unfinished_requests() == 0


async def test_a_malformed_stream_is_a_schema_error(malformed_stub: str, tmp_path: Path) -> None:
    code, out, _err = await yap_cli(
        "infer", "--target", f"openai:{malformed_stub}", "--prompt", "Hi", "--runs-dir", str(tmp_path)
    )
    assert code == 1
    record = json.loads(out)
    assert (record["status"], record["http_status"], record["stop_reason"]) == ("schema_error", 200, "abort")
    assert record["response_snapshot"]["assistant_text_raw"] == "Hi"


async def test_scenario_records_a_failed_test_and_goes_on(yap: YapTarget, malformed_stub: str, tmp_path: Path) -> None:
    scenario = load_scenario(
        _json_file(tmp_path, {"tests": [{"id": "a", "turns": ["One?", "Two?"]}, {"id": "b", "prompt": "Three?"}]})
    )
    target = open_target(f"openai:{malformed_stub}")
    lines: list[dict[str, object]] = []
    try:
        summary = await run_scenario(
            target, scenario, tmp_path / "runs", run_id="bad", bookmark=Bookmark(), emit=lines.append
        )
    finally:
        await target.aclose()
    assert summary["by_status"] == {"schema_error": 2}
    metrics = json.loads((tmp_path / "runs" / "bad" / "inference" / "a" / "metrics.json").read_text())
    assert (metrics["status"], metrics["turns_run"], metrics["turns_planned"]) == ("schema_error", 1, 2)
    assert len(lines) == 3


def _json_file(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "scenario.json"
    path.write_text(json.dumps(data))
    return path


async def test_an_in_process_target_renders_ids_and_keeps_the_deadline() -> None:
    target = open_target("fake")
    try:
        record = await infer(target, prompt="Hello?", system="Be brief.", kind="thinking")
    finally:
        await target.aclose()
    assert (record["status"], record["http_status"], record["stop_reason"]) == ("ok", None, "stop")
    assert record["usage"]["prompt_tokens"] > 0 and record["response_snapshot"]["assistant_content_text"]
    assert record["request_snapshot"]["sampling"]["top_p"] == 0.95

    slow = FakeEngine(text="late", first_token_delay_s=5.0)
    record = await infer(Target(slow, "slow fake", tokenizer=slow.tokenizer), prompt="Hi", timeout_s=0.3)
    assert (record["status"], record["stop_reason"]) == ("timeout", "abort")
    assert record["timings"]["total_latency_ms"] < 2000
    assert slow.num_unfinished_requests() == 0  # the deadline closed the stream, which aborted the request
