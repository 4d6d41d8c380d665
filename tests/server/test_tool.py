"""The tool classifier for real on CPU: the demo classifier (all-MiniLM-L6-v2 fine-tuned offline)."""

from __future__ import annotations

import asyncio
import json
import os
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import websockets

from yap_engines import FakeEngine
from yap_engines.demo import held_out_accuracy
from yap_engines.tool import ToolClassifier, ToolSettings

from .conftest import KEY, check_turn_invariants, live_server

YES = ["can you look at my screen?", "what does this error say?", "read this page for me"]
NO = ["tell me a joke", "I saw a movie last night", "what's the capital of France?"]


@pytest.fixture
async def classifier(demo_tool_dir: Path) -> AsyncIterator[ToolClassifier]:
    tool = ToolClassifier.load(str(demo_tool_dir), ToolSettings(tool_device="cpu"))
    yield tool
    await tool.aclose()


def with_settings(tool: ToolClassifier, **overrides: Any) -> ToolClassifier:
    settings = ToolSettings(**{**tool.settings.model_dump(), **overrides})
    return ToolClassifier(tool.model, tool.tokenizer, settings, model_id=tool.model_id)


def test_the_demo_classifier_records_a_good_held_out_accuracy(demo_tool_dir: Path) -> None:
    accuracy = held_out_accuracy(demo_tool_dir)
    assert accuracy is not None and accuracy >= 0.85


async def test_it_tells_look_requests_from_chat(classifier: ToolClassifier) -> None:
    for text in YES:
        assert (await classifier.classify([], text)).status == "yes", text
    for text in NO:
        assert (await classifier.classify([], text)).status == "no", text


async def test_the_threshold_decides(classifier: ToolClassifier) -> None:
    candidates = ["hmm, this one", "what about it", "the thing here", "see", "okay look", "is it"]
    scored = [(abs((await classifier.classify([], c)).score - 0.5), c) for c in candidates]
    text = min(scored)[1]  # the least certain utterance, so thresholds on both sides are meaningful
    score = (await classifier.classify([], text)).score
    below = with_settings(classifier, tool_threshold=max(score - 0.01, 0.0))
    above = with_settings(classifier, tool_threshold=min(score + 0.01, 1.0))
    try:
        assert (await below.classify([], text)).status == "yes"
        assert (await above.classify([], text)).status == "no"
        assert classifier.settings.tool_threshold == 0.66
    finally:
        await below.aclose()
        await above.aclose()


def test_truncation_keeps_the_end_of_the_utterance(classifier: ToolClassifier) -> None:
    short = with_settings(classifier, tool_max_length=16)
    utterance = "blah " * 100 + "please read this page"
    ids = short.encode([], utterance)
    assert len(ids) == 16
    assert classifier.tokenizer.decode(ids, skip_special_tokens=True).endswith("please read this page")


def test_history_is_budgeted_and_the_oldest_turns_go_first(classifier: ToolClassifier) -> None:
    tight = with_settings(classifier, tool_history_tokens=9)  # each turn below is 4 tokens: two fit
    history = ["oldest turn about cats", "middle turn about dogs", "newest turn about birds"]
    ids = tight.encode(history, "what is this?")
    text = classifier.tokenizer.decode(ids, skip_special_tokens=True)
    assert "birds" in text and "dogs" in text and "cats" not in text
    assert len(ids) <= 9 + len(tight.encode([], "what is this?")) + 1
    roomy = with_settings(classifier, tool_history_tokens=900)
    full = classifier.tokenizer.decode(roomy.encode(history, "what is this?"), skip_special_tokens=True)
    assert "cats" in full and full.endswith("what is this?")
    none = with_settings(classifier, tool_history_tokens=0)
    alone = classifier.tokenizer.decode(none.encode(history, "what is this?"), skip_special_tokens=True)
    assert alone == "what is this?"  # a budget of 0 judges the newest utterance alone


def test_the_history_budget_clamps_to_the_model_length_and_the_utterance_stays_whole(
    classifier: ToolClassifier,
) -> None:
    short = with_settings(classifier, tool_max_length=32, tool_history_tokens=10_000)
    specials = classifier.tokenizer.num_special_tokens_to_add(pair=True)
    assert short.history_budget == 32 - specials
    assert with_settings(classifier, tool_history_tokens=10_000).history_budget == 512 - specials
    history = [f"earlier turn number {n} about the weather" for n in range(20)]
    utterance = "and what does the second line on this page say?"
    words = classifier.tokenizer(utterance, add_special_tokens=False)["input_ids"]
    rendered = short.render(history, utterance)
    assert len(rendered.ids) <= 32
    # the utterance is the second segment, whole; the newest earlier turns fill what is left, whole
    assert [i for i, t in zip(rendered.ids, rendered.type_ids, strict=True) if t == 1] == [
        *words,
        short.tokenizer.sep_token_id,
    ]
    text = classifier.tokenizer.decode(rendered.ids, skip_special_tokens=True)
    assert "number 19 about the weather" in text and "number 17" not in text
    assert text.endswith(utterance)
    # an utterance longer than the model alone: its end is kept, and no history fits beside it
    long = "blah " * 100 + utterance
    tail = short.render(history, long)
    assert len(tail.ids) == 32 and set(tail.type_ids) == {0}
    assert classifier.tokenizer.decode(tail.ids, skip_special_tokens=True).endswith("second line on this page say?")


def test_the_model_reads_the_utterance_as_its_own_segment(classifier: ToolClassifier) -> None:
    roomy = with_settings(classifier, tool_history_tokens=64)
    rendered = roomy.render(["look at this", "nice"], "and the next one?")
    inputs = roomy.model_inputs([rendered, roomy.render([], "hi")])
    assert inputs["token_type_ids"][0].tolist() == list(rendered.type_ids)
    assert inputs["token_type_ids"][1].tolist()[:3] == [0, 0, 0] and inputs["attention_mask"][1].sum() == 3
    sep = classifier.tokenizer.sep_token_id
    assert list(rendered.ids).count(sep) == 3  # between the earlier turns, after them, after the utterance


@pytest.mark.parametrize(
    ("model_type", "positions", "override", "expected"),
    [
        ("longformer", 4098, None, 1536),
        ("bert", 512, None, 512),
        ("modernbert", 8192, None, 512),
        ("distilbert", 512, None, 512),
        ("roberta", 514, None, 512),
        ("bert", 512, 128, 128),
        ("bert", 512, 4096, 512),
        ("llama", 2048, None, 2048),
    ],
)
def test_max_length_is_model_aware(model_type: str, positions: int, override: int | None, expected: int) -> None:
    config = types.SimpleNamespace(model_type=model_type, max_position_embeddings=positions)
    assert ToolClassifier.model_max_length(config, override) == expected


async def test_batching_gives_the_same_answers_as_one_by_one(classifier: ToolClassifier) -> None:
    texts = (YES + NO) * 3
    # a generous timeout: on a loaded machine a late batch must not turn into a "timeout" answer
    batched = with_settings(classifier, tool_max_batch=16, tool_batch_window_ms=50, tool_timeout_s=30)
    single = with_settings(classifier, tool_max_batch=1, tool_batch_window_ms=0, tool_timeout_s=30)
    try:
        together = await asyncio.gather(*(batched.classify([], t) for t in texts))
        alone = [await single.classify([], t) for t in texts]
        assert [d.status for d in together] == [d.status for d in alone]
        assert [d.score for d in together] == pytest.approx([d.score for d in alone], abs=1e-3)
        assert batched.batches_run < len(texts) and single.batches_run == len(texts)
    finally:
        await batched.aclose()
        await single.aclose()


async def test_timeouts_count_as_no_and_their_work_never_runs(classifier: ToolClassifier) -> None:
    slow_window = with_settings(classifier, tool_timeout_s=0.01, tool_batch_window_ms=200)
    try:
        decisions = await asyncio.gather(*(slow_window.classify([], t) for t in YES))
        assert {(d.status, d.reason) for d in decisions} == {("no", "timeout")}
        await asyncio.sleep(0.3)  # past the batch window: the batcher has looked at the queue
        assert slow_window.items_run == 0 and slow_window.pending() == 0
    finally:
        await slow_window.aclose()


async def test_a_cancelled_classification_is_dropped(classifier: ToolClassifier) -> None:
    waiting = with_settings(classifier, tool_batch_window_ms=200)
    try:
        task = asyncio.create_task(waiting.classify([], YES[0]))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)
        assert waiting.items_run == 0
    finally:
        await waiting.aclose()


async def test_a_full_queue_answers_no_at_once(classifier: ToolClassifier) -> None:
    tiny = with_settings(classifier, tool_queue_size=1, tool_batch_window_ms=100, tool_max_batch=1)
    try:
        decisions = await asyncio.gather(*(tiny.classify([], t) for t in YES * 2))
        assert "overloaded" in {d.reason for d in decisions}
    finally:
        await tiny.aclose()


async def turn_frames(origin: str, utterance: str) -> list[dict[str, Any]]:
    async with websockets.connect(f"{origin}/ws?api_key={KEY}") as ws:
        start = {"chat_prompt": "Be brief.", "user_utterance": utterance}
        await ws.send(json.dumps({"type": "start", "session_id": "s", "request_id": "t1", "payload": start}))
        frames = []
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 30))
            frames.append(frame)
            if frame["request_id"] == "t1" and frame["type"] in ("done", "cancelled", "error"):
                check_turn_invariants(frames, {"t1"})
                return frames


@pytest.mark.parametrize("mode", ["both", "tool", "chat"])
async def test_toolcall_ordering_over_a_real_socket(classifier: ToolClassifier, mode: str) -> None:
    chat = FakeEngine(text="Sure, one moment.", tokens_per_s=200)
    engines = {"chat": chat, "tool": classifier}
    async with live_server(chat, deploy_mode=mode, engines=engines) as origin:
        positive = await turn_frames(origin, YES[0])
        kinds = [f["type"] for f in positive if f["type"] != "ack"]
        negative = [f for f in await turn_frames(origin, NO[0]) if f["type"] == "toolcall"]
    if mode != "chat":  # the seed system's toolcall: raw is the array of tool calls, the label beside it
        yes = next(f["payload"] for f in positive if f["type"] == "toolcall")
        assert (yes["status"], yes["raw"], yes["label"]) == ("yes", [{"name": "take_screenshot"}], "take_screenshot")
        assert (negative[0]["payload"]["raw"], negative[0]["payload"]["label"]) == ([], "no_tool")
    if mode == "both":
        assert kinds[0] == "toolcall" and kinds[1] == "token" and kinds[-1] == "done"
        assert negative[0]["payload"]["status"] == "no"
    elif mode == "tool":
        assert kinds == ["toolcall", "done"]
    else:
        assert "toolcall" not in kinds and kinds[-1] == "done"
    assert chat.num_unfinished_requests() == 0


def test_the_replay_client_reads_raw_as_the_seed_clients_do() -> None:
    from yap_cli.client import tool_decision

    assert tool_decision({"status": "yes", "raw": [{"name": "take_screenshot"}], "label": "x"}) == "yes"
    assert tool_decision({"status": "no", "raw": [], "label": "timeout"}) == "no"
    assert tool_decision(None) == "none"
    for malformed in ({"status": "yes", "raw": "take_screenshot"}, {"status": "yes", "raw": []}):
        with pytest.raises(ValueError, match="malformed toolcall"):
            tool_decision(malformed)


async def test_the_tool_regression_replay_client(classifier: ToolClassifier) -> None:
    from yap_cli import client as yap_client

    chat = FakeEngine(text="Okay.", tokens_per_s=500)
    async with live_server(chat, deploy_mode="both", engines={"chat": chat, "tool": classifier}) as origin:
        args = yap_client.client_parser().parse_args(
            ["client", "tool", "--server", origin, "--key", KEY, "--json", "--limit", "6", "--timeout", "30"]
        )
        report = await yap_client.tool(args)
    assert report["cases"] == 6 and report["steps"] == 12 and report["failures"] == []
    assert report["step_accuracy"] >= 0.75
    wrong = len(report["false_positives"]) + len(report["false_negatives"])
    assert wrong == round((1 - report["step_accuracy"]) * report["steps"])


async def test_the_tool_clients_fail_on_a_chat_only_server_where_no_decision_comes() -> None:
    """`yap client vision`, `screen-analysis` and `tool` need a `toolcall` frame: none is a failure (exit 1)."""
    from yap_cli import client as yap_client

    chat = FakeEngine(text="Okay.", tokens_per_s=500)
    async with live_server(chat, deploy_mode="chat") as origin:
        common = ["--server", origin, "--key", KEY, "--json"]
        parse = yap_client.client_parser().parse_args
        vision = await yap_client.vision(parse(["client", "vision", *common]))
        screen = await yap_client.screen_analysis(parse(["client", "screen_analysis", *common]))
        replay = await yap_client.tool(parse(["client", "tool", *common, "--limit", "2", "--max-steps", "1"]))
    assert vision["decision"] == "none" and any("no toolcall frame" in f for f in vision["failures"])
    assert screen["decision"] == "none" and screen["followup"]["outcome"] == "done" and screen["failures"]
    assert replay["steps"] == 2 and len(replay["failures"]) == 2
    assert all("no toolcall decision" in f for f in replay["failures"])


def test_yap_tool_classify_reads_stdin_lines(demo_tool_dir: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "yap_cli", "tool", "classify", "--model", str(demo_tool_dir)],
        input="can you look at my screen?\n\ntell me a joke\n",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "TOOL_TIMEOUT_S": "60"},  # a busy machine must not turn a slow answer into "no"
    )
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(line["text"], line["status"]) for line in lines] == [
        ("can you look at my screen?", "yes"),
        ("tell me a joke", "no"),
    ]
    assert all(0.0 <= line["score"] <= 1.0 for line in lines)
