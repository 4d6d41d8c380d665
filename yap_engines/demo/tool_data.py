"""The demo tool classifier's training set, generated from `tool_families.FAMILIES`.

Every example carries its family. `group_split` leaves whole families out (never one family on both
sides), and `with_history` builds multi-turn examples from one side's own utterances only, so the
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


def with_history(examples: Sequence[Row], *, count: int, seed: int = 0) -> list[Row]:
    """`count` multi-turn examples built only from `examples` (one side of a split).

    The label is always the last utterance's own: a look request earlier in the conversation does
    not make an unrelated follow-up a request, and earlier chat does not hide one. The exception is a
    family's `after` follow-ups ("and the cheaper one?"), which ask for a look only right after a
    look request of their own family.
    """
    rng = random.Random(seed)
    names = sorted({row.family for row in examples})
    yes = {f: [r for r in examples if r.family == f and r.label == 1] for f in names}
    no = {f: [r for r in examples if r.family == f and r.label == 0] for f in names}
    after = {f.name: f.after for f in FAMILIES if f.name in names and f.after}
    all_yes = [r for rows in yes.values() for r in rows]
    all_no = [r for rows in no.values() for r in rows]
    out: list[Row] = []
    while len(out) < count and all_yes and all_no:
        kind = rng.randrange(6)
        if kind == 0:  # look request, then something unrelated from anywhere on this side
            last = rng.choice(all_no)
            history = [rng.choice(all_yes).utterance]
        elif kind == 1:  # look request, then a hard negative of the same family
            last = rng.choice(all_no)
            history = [rng.choice(yes[last.family] or all_yes).utterance]
        elif kind == 2:  # chat, then a look request
            last = rng.choice(all_yes)
            history = [r.utterance for r in rng.sample(all_no, rng.randint(1, 3))]
        elif kind == 3:  # look request, chat, look request
            last = rng.choice(all_yes)
            history = [rng.choice(all_yes).utterance, rng.choice(all_no).utterance]
        elif after:  # a follow-up: a request after a look request of its family, chat otherwise
            family = rng.choice(sorted(after))
            looked = rng.random() < 0.5 and bool(yes[family])
            opener = rng.choice(yes[family] if looked else no[family] or all_no)
            out.append(Row(family, int(looked), rng.choice(after[family]), (opener.utterance,)))
            continue
        else:
            continue
        if rng.random() < 0.3:
            history.insert(0, rng.choice(all_no).utterance)
        out.append(Row(last.family, last.label, last.utterance, tuple(history)))
    return out
