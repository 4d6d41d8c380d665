"""The demo tool classifier: an honest group-wise split, and a floor on families it never trained on."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool
from yap_engines.demo.tool_classifier import (
    HAND_WRITTEN_REPEATS,
    HAND_WRITTEN_TRAINING,
    HAND_WRITTEN_VALIDATION,
    TRAIN_PER_LABEL,
    VALIDATION_FAMILIES,
    build_data,
    build_info,
    minilm_dir,
    training_renderer,
)
from yap_engines.demo.tool_conversations import (
    CHAT_FOLLOWUPS,
    DEPENDENT_FOLLOWUPS,
    DETAIL_FOLLOWUPS,
    LOOK_FOLLOWUPS,
    REACTIONS,
    conversations,
)
from yap_engines.demo.tool_data import group_split, training_examples
from yap_engines.demo.tool_families import FAMILIES
from yap_engines.tool import Rendered, ToolClassifier, ToolSettings
from yap_engines.tool_eval import Row, read_rows, shipped_rows

# The shipped held-out files, never tuned on, measured once with recipe 8 (history budget 0): the floors sit a
# little below its figures. Held-out families: accuracy 0.989, FPR 0.000, conversation steps 0.989, after-a-look
# no-rate 1.000; their single-utterance families: accuracy 0.988, FPR 0.000 (the targets: >= 0.95, <= 0.02).
FLOOR_ACCURACY = 0.95
CEILING_FPR = 0.03
FLOOR_CONVERSATIONS = 0.95
FLOOR_AFTER_REQUEST_NO_RATE = 0.95
SINGLE_UTTERANCE_FLOOR_ACCURACY = 0.95
SINGLE_UTTERANCE_CEILING_FPR = 0.02
# The follow-up conversations (tool_heldout_followups.tsv): accuracy 0.990, FPR 0.015, no-rate 0.983, step
# accuracy 0.990.
FOLLOWUPS = Path(__file__).parents[3] / "yap_engines" / "demo" / "data" / "tool_heldout_followups.tsv"
FOLLOWUPS_FLOOR_ACCURACY = 0.95
FOLLOWUPS_CEILING_FPR = 0.04
FOLLOWUPS_FLOOR_AFTER_REQUEST_NO_RATE = 0.95
FOLLOWUPS_FLOOR_STEP_ACCURACY = 0.95
# The conversations written before recipe 4 changed the training (tool_heldout_conversations.tsv) and
# before recipe 5 (tool_heldout_conversations2.tsv): step accuracy 0.972 / 0.934, look recall 0.939 / 0.883,
# after-a-look no-rate 0.993 / 0.975 (the targets: 0.93, 0.88, 0.97).
CONVERSATIONS = FOLLOWUPS.with_name("tool_heldout_conversations.tsv")
CONVERSATIONS_2 = FOLLOWUPS.with_name("tool_heldout_conversations2.tsv")
CONVERSATIONS_FLOORS = {"step_accuracy": 0.94, "look_recall": 0.90, "after_request_no_rate": 0.96}
CONVERSATIONS_2_FLOORS = {"step_accuracy": 0.90, "look_recall": 0.84, "after_request_no_rate": 0.94}
# The hand-written validation conversations of both files together (chosen on, never trained on), as the
# build's first run measured them: step accuracy 0.943, look recall 0.916, after-a-look no-rate 0.968.
VALIDATION_FLOORS = {"step_accuracy": 0.92, "recall": 0.89, "after_a_look_no_rate": 0.94}
#: Turns of up to this many words may equal a generic follow-up of the training conversations.
SHARED_FOLLOWUP_WORDS = 5


@pytest.fixture(scope="session")
def demo_tool_dir(demo_model_dir: Path) -> Path:
    return build_demo_tool(demo_model_dir.parent / DEMO_TOOL_NAME)


@pytest.mark.parametrize("held_out", [list(VALIDATION_FAMILIES), 0.25, 0.5])
def test_the_group_wise_split_never_puts_a_family_on_both_sides(held_out: list[str] | float) -> None:
    rows = training_examples()
    train, validation = group_split(rows, held_out, seed=3)
    assert train and validation and len(train) + len(validation) == len(rows)
    assert not {r.family for r in train} & {r.family for r in validation}
    # conversations are built from one side only: not even a history turn crosses over
    names = {r.family for r in validation}
    generic = {*DEPENDENT_FOLLOWUPS, *DETAIL_FOLLOWUPS, *LOOK_FOLLOWUPS, *CHAT_FOLLOWUPS, *REACTIONS}
    allowed = {r.utterance for r in validation} | {t for f in FAMILIES if f.name in names for t in f.after} | generic
    steps = [step for conversation in conversations(validation, count=200, seed=1) for step in conversation]
    assert {step.label for step in steps} == {0, 1}
    for step in steps:
        assert step.family in names
        assert {step.utterance, *step.history} <= allowed


@pytest.mark.parametrize(
    "path",
    [None, FOLLOWUPS, CONVERSATIONS, CONVERSATIONS_2],
    ids=["held-out-families", "follow-ups", "conversations", "conversations-2"],
)
def test_the_shipped_held_out_files_are_not_training_families(path: Path | None) -> None:
    held_out = read_rows(path)
    training = training_examples(per_label=TRAIN_PER_LABEL)
    assert not {r.family for r in held_out} & {r.family for r in training}
    texts = {r.utterance.lower() for r in training} | {t.lower() for f in FAMILIES for t in f.after}
    if path == CONVERSATIONS_2:
        # Written before the generic follow-ups of the training conversations, whose few words
        # ("and the one below it?", "what about now?") any two writers share: only longer turns must differ.
        texts |= {t.lower() for t in (*DEPENDENT_FOLLOWUPS, *DETAIL_FOLLOWUPS, *LOOK_FOLLOWUPS, *CHAT_FOLLOWUPS)}
        held_out = [r for r in held_out if len(r.utterance.split()) > SHARED_FOLLOWUP_WORDS]
    assert not [r.utterance for r in held_out if r.utterance.lower() in texts]


HAND_WRITTEN_FILES = [HAND_WRITTEN_TRAINING, *HAND_WRITTEN_VALIDATION]


def _hand_validation() -> list[Row]:
    return [row for name in HAND_WRITTEN_VALIDATION for row in shipped_rows(name)]


@pytest.mark.parametrize("name", HAND_WRITTEN_FILES, ids=["training", "validation", "validation-2"])
def test_the_hand_written_conversations_are_whole_conversations_apart_from_the_held_out_files(name: str) -> None:
    rows = shipped_rows(name)
    families: dict[str, list[str]] = {}
    for row in rows:  # each family block is one conversation: a step's history is the steps above it
        assert row.history == tuple(families.setdefault(row.family, [])), row
        families[row.family].append(row.utterance)
    assert len(families) >= 40 and all(len(turns) >= 3 for turns in families.values())
    assert 0.15 <= sum(r.label for r in rows) / len(rows) <= 0.6
    for other in HAND_WRITTEN_FILES:  # a family is one file's own
        assert other == name or not families.keys() & {r.family for r in shipped_rows(other)}
    # Never a held-out family, nor a held-out turn longer than the few words any two writers share
    # (only counted: the held-out rows are not to be read while the recipe is chosen).
    texts = {r.utterance.lower() for r in rows}
    for path in (None, FOLLOWUPS, CONVERSATIONS, CONVERSATIONS_2):
        held_out = read_rows(path)
        assert not families.keys() & {r.family for r in held_out}
        shared = sum(
            1 for r in held_out if len(r.utterance.split()) > SHARED_FOLLOWUP_WORDS and r.utterance.lower() in texts
        )
        assert shared == 0, (path, shared)


def test_the_build_trains_on_the_hand_written_conversations_and_never_on_its_validation() -> None:
    data = build_data(seed=0)
    training = shipped_rows(HAND_WRITTEN_TRAINING)
    trained = [*data.train, *data.val_rows, *data.val_steps]  # the final run's rows
    assert data.train[-len(training) * HAND_WRITTEN_REPEATS :] == training * HAND_WRITTEN_REPEATS
    assert data.hand_validation == _hand_validation() and len(HAND_WRITTEN_VALIDATION) == 2
    assert not {r.family for r in data.hand_validation} & {r.family for r in trained}
    # no step of a validation conversation is trained on (a bare opening such as "okay i'm on the checkout
    # page" may be written by two writers alike; with its earlier turns, a step is the validation file's own)
    steps = {(r.history, r.utterance) for r in trained if r.history}
    assert not {(r.history, r.utterance) for r in data.hand_validation if r.history} & steps
    assert not {r.family for r in data.train} & set(VALIDATION_FAMILIES)


@pytest.mark.parametrize("budget", [None, 48], ids=["served-default", "48-tokens"])
async def test_training_renders_every_step_exactly_as_the_server_does(demo_tool_dir: Path, budget: int | None) -> None:
    """The served classifier (its saved tokenizer; its default budget or a set one) and the build's
    renderer (the base tokenizer, the same budget) give the same ids and segment ids for every step."""
    from transformers import AutoTokenizer

    settings = ToolSettings(tool_device="cpu", tool_timeout_s=120.0)
    if budget is not None:
        settings = settings.model_copy(update={"tool_history_tokens": budget})
    served = ToolClassifier.load(str(demo_tool_dir), settings)
    seen: list[Rendered] = []

    def record(batch: list[Rendered]) -> list[tuple[float, str]]:
        seen.extend(batch)
        return [(0.0, "no_tool")] * len(batch)

    served._infer = record  # type: ignore[method-assign]  # what the server would feed the model
    train, _ = group_split(training_examples(per_label=TRAIN_PER_LABEL), VALIDATION_FAMILIES)
    steps = [step for conversation in conversations(train, count=30, seed=7) for step in conversation]
    steps += shipped_rows(HAND_WRITTEN_TRAINING)[:60] + [
        r for n in HAND_WRITTEN_VALIDATION for r in shipped_rows(n)[:20]
    ]
    long_turn = "so " * 600 + "and what does the last line here say?"  # past the model's length: tail kept
    steps += [replace(steps[-1], utterance=long_turn), replace(steps[-1], history=(*steps[-1].history, long_turn))]
    try:
        for step in steps:
            await served.classify(list(step.history), step.utterance)
    finally:
        await served.aclose()
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    if budget is None:  # the build trains with the budget served by default
        trainer = training_renderer(served.model, tokenizer)
        assert build_info(demo_tool_dir)["history_tokens"] == served.history_budget == trainer.history_budget
    else:
        trainer = training_renderer(served.model, tokenizer, history_tokens=budget)
        assert any(1 in item.type_ids and 0 in item.type_ids[1:] for item in seen)  # history reached the model
    assert [trainer.render(step.history, step.utterance) for step in steps] == seen


def test_the_build_records_its_split_calibration_and_threshold(demo_tool_dir: Path) -> None:
    info = build_info(demo_tool_dir)
    assert info is not None
    assert info["validation_families"] == list(VALIDATION_FAMILIES)
    assert 0.3 <= info["threshold"]["chosen"] <= 0.9 and info["threshold"]["served_as"] == 0.66
    assert info["cached_path_gap"] < 1e-3  # the saved model computes what was trained
    hand_written = info["validation"]["hand_written"]
    assert hand_written["steps"] == len(_hand_validation())
    files = info["validation"]["hand_written_files"]
    assert {name: figures["steps"] for name, figures in files.items()} == {
        name: len(shipped_rows(name)) for name in HAND_WRITTEN_VALIDATION
    }
    for name, floor in VALIDATION_FLOORS.items():
        assert hand_written[name] >= floor, (name, hand_written)
    assert info["final_examples"] == len(build_data(seed=info["seed"]).train) + info["validation_examples"]


def _eval(model: Path, data: Path | None = None) -> dict:
    command = [sys.executable, "-m", "yap_cli", "tool", "eval", "--model", str(model), "--json"]
    out = subprocess.run(command + (["--data", str(data)] if data else []), capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_the_demo_classifier_clears_the_floor_on_never_trained_families(demo_tool_dir: Path) -> None:
    result = _eval(demo_tool_dir)
    assert {"accuracy", "precision", "recall", "fpr", "n"} <= result.keys()
    assert result["n"] == len(read_rows())
    assert result["accuracy"] >= FLOOR_ACCURACY, result
    assert result["fpr"] <= CEILING_FPR, result
    conversations = [f for name, f in result["families"].items() if name.startswith("conv-")]
    steps = sum(f["n"] for f in conversations)
    correct = sum(f["confusion"]["tp"] + f["confusion"]["tn"] for f in conversations)
    assert correct / steps >= FLOOR_CONVERSATIONS
    assert result["multi_turn"]["step_accuracy"] == round(correct / steps, 4)  # the conv- families
    assert result["multi_turn"]["after_request_no_rate"] >= FLOOR_AFTER_REQUEST_NO_RATE, result["multi_turn"]
    # the single-utterance families (no row with earlier turns)
    conversational = {r.family for r in read_rows() if r.history}
    single = [f["confusion"] for name, f in result["families"].items() if name not in conversational]
    tp, fp, tn, fn = (sum(c[k] for c in single) for k in ("tp", "fp", "tn", "fn"))
    assert len(single) >= 10 and (tp + tn) / (tp + fp + tn + fn) >= SINGLE_UTTERANCE_FLOOR_ACCURACY, single
    assert fp / (fp + tn) <= SINGLE_UTTERANCE_CEILING_FPR, single


def test_the_demo_classifier_clears_the_floor_on_the_follow_up_conversations(demo_tool_dir: Path) -> None:
    result = _eval(demo_tool_dir, FOLLOWUPS)
    assert result["n"] == len(read_rows(FOLLOWUPS))
    assert result["accuracy"] >= FOLLOWUPS_FLOOR_ACCURACY, result
    assert result["fpr"] <= FOLLOWUPS_CEILING_FPR, result
    turns = result["multi_turn"]
    assert turns["after_request_no_rate"] >= FOLLOWUPS_FLOOR_AFTER_REQUEST_NO_RATE, turns
    assert turns["step_accuracy"] >= FOLLOWUPS_FLOOR_STEP_ACCURACY, turns


@pytest.mark.parametrize(
    ("path", "floors"),
    [(CONVERSATIONS, CONVERSATIONS_FLOORS), (CONVERSATIONS_2, CONVERSATIONS_2_FLOORS)],
    ids=["conversations", "conversations-2"],
)
def test_the_demo_classifier_clears_the_floor_on_the_held_out_conversations(
    demo_tool_dir: Path, path: Path, floors: dict[str, float]
) -> None:
    turns = _eval(demo_tool_dir, path)["multi_turn"]
    assert turns["steps"] == len(read_rows(path))
    assert turns["by_distance"].keys() >= {"none", "1", "2"}
    for name, floor in floors.items():
        assert turns[name] >= floor, (name, turns)
