"""The demo tool classifier's training set, generated from `tool_families.FAMILIES`.

Every example carries its family. `group_split` leaves whole families out (never one family on both
sides); `tool_conversations` then builds conversations from one side's own utterances only, so the
held-out side stays unseen: history turns never cross the split either. Deterministic for a seed.
"""

from __future__ import annotations

import itertools
import random
import string
from collections.abc import Iterable, Sequence

from ..tool_eval import Row
from .tool_families import FAMILIES, Family


def expand(templates: Iterable[str], slots: dict[str, tuple[str, ...]]) -> list[str]:
    """Every filling of every template from `slots` (a template without slots stands for itself)."""
    out: list[str] = []
    for template in templates:
        names = sorted({name for _, name, _, _ in string.Formatter().parse(template) if name})
        for values in itertools.product(*(slots[name] for name in names)):
            out.append(template.format(**dict(zip(names, values, strict=True))))
    return out


def family_examples(family: Family, *, per_label: int = 80, seed: int = 0) -> list[Row]:
    """Up to `per_label` positives and as many negatives of one family, single-turn."""
    rng = random.Random(f"{family.name}/{seed}")
    rows: list[Row] = []
    for label, templates in ((1, family.yes), (0, family.no)):
        texts = sorted(set(expand(templates, family.slots)))
        rng.shuffle(texts)
        rows += [Row(family.name, label, text) for text in texts[:per_label]]
    return rows


def training_examples(*, per_label: int = 80, seed: int = 0) -> list[Row]:
    """The single-turn examples of every family."""
    return [row for family in FAMILIES for row in family_examples(family, per_label=per_label, seed=seed)]


def group_split(
    examples: Sequence[Row], held_out: Sequence[str] | float, *, seed: int = 0
) -> tuple[list[Row], list[Row]]:
    """(train, held-out) with whole families on one side: `held_out` names them or gives their share."""
    families = sorted({row.family for row in examples})
    if isinstance(held_out, float):
        rng = random.Random(seed)
        chosen = set(rng.sample(families, max(1, round(len(families) * held_out))))
    else:
        chosen = set(held_out)
    return [r for r in examples if r.family not in chosen], [r for r in examples if r.family in chosen]
