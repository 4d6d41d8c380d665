"""Evaluate a tool classifier on a labelled TSV: accuracy, precision, recall, false-positive rate.

File format (UTF-8, one example per line)::

    label<TAB>utterance[<TAB>earlier user turns joined by " || ", oldest first]

Labels are `yes`/`no`, `1`/`0` or `take_screenshot`/`no_tool`. Blank lines and lines starting with
`#` are skipped, except `# family: NAME`, which puts the rows below it in family NAME (rows before
any such line are in family `all`), and `# format: conversations`, which makes every family block
below it one conversation written compactly: rows are `label<TAB>utterance` only, and a row's
earlier turns are the utterances of the rows above it in its block, oldest first.

Figures are reported overall, per family, and for the slice `after-a-look`: rows whose earlier turns
include one the same file labels `yes` (the last utterance of a conversation that already asked for
a look), where false alarms are most tempting.

`report` adds a `multi_turn` object with three figures over a file's conversations:

- `after_request_no_rate`: over the after-a-look rows labelled `no` (the last utterance follows a
  screen request earlier in its conversation but does not ask for one itself), the share the
  classifier answers `no`, i.e. TN / (TN + FP) = 1 - FPR on that subset (`after_request_no_n` rows).
  It is the issue's "precision on last utterances that follow a screen request but do not ask for
  one": on a subset whose labels are all `no`, the only thing to measure is how many stay `no`.
- `after_a_look_precision`: precision (TP / (TP + FP)) on the whole after-a-look slice, `yes` and `no`
  rows together: of the looks taken after an earlier look, the share that were asked for.
- `step_accuracy`: accuracy over every step of the file's conversations, i.e. the rows of every family
  that has at least one row with earlier turns (`steps` rows).
- `look_recall`: recall over those steps (of the `look_steps` that ask for a look, the share answered yes).
- `by_distance`: those steps grouped by the distance to their last look (`look_distances`: `1` right
  after a look, `2`, `3`, `4+`, `none` before any look), each with its accuracy, its recall on look
  steps and its no-rate on the others.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

HISTORY_SEPARATOR = " || "
#: `# format: conversations`: the compact form of a file of whole conversations (see the module docstring).
CONVERSATIONS_FORMAT = "conversations"
#: Look distances from this one up are reported together (`by_distance`).
DISTANCE_CAP = 4
AFTER_A_LOOK = "after-a-look"
_LABELS = {"yes": 1, "1": 1, "take_screenshot": 1, "no": 0, "0": 0, "no_tool": 0}

#: Decides a batch of (earlier turns, utterance) pairs: True means "take a screenshot".
Decide = Callable[[Sequence[tuple[tuple[str, ...], str]]], Awaitable[list[bool]]]


@dataclass(frozen=True)
class Row:
    """One labelled example read from an evaluation file."""

    family: str
    label: int
    utterance: str
    history: tuple[str, ...] = ()


@dataclass(frozen=True)
class Figures:
    """The confusion counts of one set of rows and the rates derived from them (0.0 when undefined)."""

    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.tn + self.fn

    @property
    def accuracy(self) -> float:
        return _ratio(self.tp + self.tn, self.n)

    @property
    def precision(self) -> float:
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float:
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float:
        return _ratio(self.fp, self.fp + self.tn)

    def as_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "fpr": round(self.fpr, 4),
            "n": self.n,
            "confusion": {"tp": self.tp, "fp": self.fp, "tn": self.tn, "fn": self.fn},
        }


def _ratio(part: int, whole: int) -> float:
    return part / whole if whole else 0.0


def parse_label(text: str) -> int:
    """1 for yes/1/take_screenshot, 0 for no/0/no_tool (case-insensitive); anything else is an error."""
    try:
        return _LABELS[text.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown label {text!r}: use yes/no, 1/0 or take_screenshot/no_tool") from None


def parse_rows(lines: Iterable[str], *, source: str = "<data>") -> list[Row]:
    """Rows of an evaluation file (see the module docstring); errors name the line."""
    rows: list[Row] = []
    family = "all"
    compact = False  # `# format: conversations`: each family block is one conversation
    block: list[str] = []  # the utterances of the current block so far (the next step's history)
    for number, raw in enumerate(lines, 1):
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        if line.startswith("#"):
            key, _, value = line.lstrip("#").strip().partition(":")
            key, value = key.strip().lower(), value.strip()
            if key == "family" and value:
                family, block = value, []
            elif key == "format" and value:
                if value.lower() != CONVERSATIONS_FORMAT:
                    raise ValueError(
                        f"{source}:{number}: unknown format {value!r}: the one format is {CONVERSATIONS_FORMAT!r}"
                    )
                compact, block = True, []
            continue
        columns = line.split("\t")
        widest = 2 if compact else 3
        if len(columns) < 2 or len(columns) > widest or not columns[1].strip():
            expected = "label<TAB>utterance (format: conversations)" if compact else "label<TAB>utterance[<TAB>history]"
            raise ValueError(f"{source}:{number}: expected {expected}")
        try:
            label = parse_label(columns[0])
        except ValueError as exc:
            raise ValueError(f"{source}:{number}: {exc}") from None
        utterance = columns[1].strip()
        if compact:
            history = tuple(block)
            block.append(utterance)
        else:
            history = (
                tuple(t.strip() for t in columns[2].split(HISTORY_SEPARATOR) if t.strip()) if len(columns) > 2 else ()
            )
        rows.append(Row(family, label, utterance, history))
    return rows


def read_rows(path: str | Path | None = None) -> list[Row]:
    """Rows of the file at `path`; without one, the shipped held-out families of the demo classifier."""
    if path is None:
        return shipped_rows("tool_heldout.tsv")
    with open(path, encoding="utf-8") as handle:
        return parse_rows(handle, source=str(path))


def shipped_rows(name: str) -> list[Row]:
    """Rows of one of the demo classifier's files shipped in `yap_engines/demo/data/` (`name`: its file name)."""
    text = resources.files("yap_engines.demo").joinpath(f"data/{name}").read_text(encoding="utf-8")
    return parse_rows(text.splitlines(), source=name)


def look_distances(rows: Sequence[Row]) -> list[int | None]:
    """For each row, how many steps back its last look is: 1 when the turn just before it is itself a row
    labelled yes (same history prefix), 2 when the one before that is, ...; None when no earlier turn is."""
    labels = {(row.history, row.utterance): row.label for row in rows}
    out: list[int | None] = []
    for row in rows:
        looks = [i for i, turn in enumerate(row.history) if labels.get((row.history[:i], turn)) == 1]
        out.append(len(row.history) - looks[-1] if looks else None)
    return out


def follows_a_look(rows: Sequence[Row]) -> list[bool]:
    """For each row, whether one of its earlier turns is itself a row labelled yes (same history prefix)."""
    return [distance is not None for distance in look_distances(rows)]


def distance_bucket(distance: int | None) -> str:
    """The `by_distance` key of a look distance: `none`, `1`, `2`, `3` or `4+`."""
    if distance is None:
        return "none"
    return str(distance) if distance < DISTANCE_CAP else f"{DISTANCE_CAP}+"


def figures(labels: Sequence[int], predicted: Sequence[bool]) -> Figures:
    """Confusion counts of predictions against labels."""
    pairs = list(zip(labels, predicted, strict=True))
    return Figures(
        tp=sum(1 for y, p in pairs if y and p),
        fp=sum(1 for y, p in pairs if not y and p),
        tn=sum(1 for y, p in pairs if not y and not p),
        fn=sum(1 for y, p in pairs if y and not p),
    )


def _figures_of(rows: Sequence[Row], predicted: Sequence[bool], index: Iterable[int]) -> Figures:
    """`figures` of the rows at `index`."""
    chosen = list(index)
    return figures([rows[i].label for i in chosen], [predicted[i] for i in chosen])


def _after_a_look(rows: Sequence[Row]) -> list[int]:
    """The indexes of the after-a-look rows (`follows_a_look`)."""
    return [i for i, flag in enumerate(follows_a_look(rows)) if flag]


def report(rows: Sequence[Row], predicted: Sequence[bool]) -> dict[str, Any]:
    """Overall figures at the top level, plus `families` (per family), `slices` (after-a-look) and `multi_turn`."""
    overall = figures([r.label for r in rows], predicted).as_dict()
    families = {
        name: _figures_of(rows, predicted, (i for i, r in enumerate(rows) if r.family == name)).as_dict()
        for name in dict.fromkeys(r.family for r in rows)
    }
    after = _after_a_look(rows)
    slices = {AFTER_A_LOOK: _figures_of(rows, predicted, after).as_dict()}
    return {**overall, "families": families, "slices": slices, "multi_turn": multi_turn(rows, predicted)}


def multi_turn(rows: Sequence[Row], predicted: Sequence[bool]) -> dict[str, Any]:
    """The conversation figures (see the module docstring): over the steps of the file's conversations,
    `step_accuracy`, `look_recall` and, after a look, `after_request_no_rate` and `after_a_look_precision`;
    `by_distance` splits the steps by how far back their last look is."""
    after = _after_a_look(rows)
    after_figures = _figures_of(rows, predicted, after)
    after_no = [i for i in after if rows[i].label == 0]
    kept_no = sum(1 for i in after_no if not predicted[i])
    conversational = {r.family for r in rows if r.history}
    steps = [i for i, r in enumerate(rows) if r.family in conversational]
    step_figures = _figures_of(rows, predicted, steps)
    distances = look_distances(rows)
    buckets: dict[str, list[int]] = {}
    for i in sorted(steps, key=lambda i: (distances[i] is not None, distances[i] or 0)):
        buckets.setdefault(distance_bucket(distances[i]), []).append(i)
    return {
        "after_request_no_rate": round(_ratio(kept_no, len(after_no)), 4),
        "after_request_no_n": len(after_no),
        "after_a_look_precision": round(after_figures.precision, 4),
        "step_accuracy": round(step_figures.accuracy, 4),
        "steps": len(steps),
        "look_recall": round(step_figures.recall, 4),
        "look_steps": step_figures.tp + step_figures.fn,
        "by_distance": {
            name: _distance_figures(_figures_of(rows, predicted, index)) for name, index in buckets.items()
        },
    }


def _distance_figures(f: Figures) -> dict[str, Any]:
    """One `by_distance` entry: its steps, accuracy, recall on its look steps and no-rate on the others."""
    return {
        "n": f.n,
        "accuracy": round(f.accuracy, 4),
        "look_steps": f.tp + f.fn,
        "recall": round(f.recall, 4),
        "no_steps": f.tn + f.fp,
        "no_rate": round(_ratio(f.tn, f.tn + f.fp), 4),
    }


async def evaluate(rows: Sequence[Row], decide: Decide) -> dict[str, Any]:
    """Run `decide` on every row and report (see `report`)."""
    predicted = await decide([(row.history, row.utterance) for row in rows])
    if len(predicted) != len(rows):
        raise ValueError(f"the classifier answered {len(predicted)} of {len(rows)} rows")
    return report(rows, predicted)


def format_report(result: dict[str, Any]) -> str:
    """A plain-text table: one line per family, the after-a-look slice and the overall confusion table."""
    header = f"{'family':<22} {'n':>4} {'acc':>6} {'prec':>6} {'recall':>6} {'fpr':>6}   tp  fp  tn  fn"

    def line(name: str, f: dict[str, Any]) -> str:
        c = f["confusion"]
        return (
            f"{name:<22} {f['n']:>4} {f['accuracy']:>6.3f} {f['precision']:>6.3f} {f['recall']:>6.3f} "
            f"{f['fpr']:>6.3f} {c['tp']:>4}{c['fp']:>4}{c['tn']:>4}{c['fn']:>4}"
        )

    lines = [header, *(line(name, f) for name, f in result["families"].items())]
    lines += ["-" * len(header), *(line(name, f) for name, f in result["slices"].items()), line("overall", result)]
    c = result["confusion"]
    m = result.get("multi_turn")
    if m:
        lines += [
            "",
            f"multi-turn: after-request no-rate {m['after_request_no_rate']:.3f} (n={m['after_request_no_n']})  "
            f"after-a-look precision {m['after_a_look_precision']:.3f}  "
            f"step accuracy {m['step_accuracy']:.3f} (n={m['steps']})  "
            f"look recall {m['look_recall']:.3f} (n={m['look_steps']})",
            "last look     steps    acc  recall (n)   no-rate (n)",
            *(
                f"{name:<12} {d['n']:>6} {d['accuracy']:>6.3f}  {d['recall']:>6.3f} ({d['look_steps']:>3})"
                f"   {d['no_rate']:>6.3f} ({d['no_steps']:>3})"
                for name, d in m["by_distance"].items()
            ),
        ]
    lines += [
        "",
        "confusion      predicted yes  predicted no",
        f"labelled yes   {c['tp']:>13}  {c['fn']:>12}",
        f"labelled no    {c['fp']:>13}  {c['tn']:>12}",
    ]
    return "\n".join(lines)


def classifier_decide(classifier: Any) -> Decide:
    """A `Decide` backed by a `ToolClassifier` (its threshold and history budget).

    Sends one micro-batch (`TOOL_MAX_BATCH` requests) at a time, so a long file never fills the
    queue or outlives `TOOL_TIMEOUT_S` (both would answer "no" and skew the figures).
    """
    import asyncio

    async def decide(items: Sequence[tuple[tuple[str, ...], str]]) -> list[bool]:
        size = max(1, int(classifier.settings.tool_max_batch))
        out: list[bool] = []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            decisions = await asyncio.gather(*(classifier.classify(list(h), u) for h, u in chunk))
            if any(d.reason != "classified" for d in decisions):
                raise RuntimeError("the tool classifier timed out or was overloaded during evaluation")
            out += [d.status == "yes" for d in decisions]
        return out

    return decide
