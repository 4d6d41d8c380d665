"""Whole conversations for the demo tool classifier's training: every step labelled, as it is served.

A conversation is a user talking to the assistant about one home family (shopping, games, a video...)
with chat from the rest of its side of the split in between. Each step is a `Row` whose history is
the earlier user turns of its conversation, exactly what the server passes to the classifier; the
build renders it with the server's own `ToolClassifier.render`. Steps are labelled by what they ask:

- a look request (a family's `yes` template) is `yes` wherever it falls, a repeated look too;
- a follow-up that refers to what is on view ("and the one below it?", "what about now?", "what's
  the due date?", "is that one legit?", a family's `after` template) is `yes` right after a look, or
  after a look and a bare reaction ("haha", "oh nice"), and `no` after chat, where the same words
  refer to the assistant's answer;
- chat, small talk after a look, a topic switch, advice, thanks and follow-ups on the assistant's
  answer ("and for beginners?") are `no`, however recent the last look.

Conversations are built from one side's families only (`group_split` first), so a held-out family's
phrasing never reaches training through a history turn either. Deterministic for a seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from ..tool_eval import Row
from .tool_data import expand
from .tool_families import FAMILIES

#: Follow-ups whose meaning depends on the previous step: after a look they ask for another look,
#: after chat they ask about the assistant's answer.
DEPENDENT_FOLLOWUPS = expand(
    (
        "{and} the one {place}?",
        "{and} the {ordinal} one?",
        "{and} now?",
        "{and} this time?",
        "is that one {adj}?",
        "which of those is {best}?",
        "{and} the {ordinal} {thing}?",
        "how about {ordinal}?",
    ),
    {
        "and": ("and", "what about", "how about", "okay and", "so", "hmm, and"),
        "place": (
            "below it",
            "above it",
            "under that",
            "next to it",
            "on the left",
            "on the right",
            "after that",
            "before that",
            "at the bottom",
            "at the top",
            "in the middle",
            "beside it",
        ),
        "ordinal": ("second", "third", "last", "first", "next", "other", "fourth", "previous"),
        "adj": ("cheaper", "better", "bigger", "right", "newer", "safer", "any good", "the same"),
        "best": ("the best deal", "the nicest", "the cheapest", "the closest", "the newest", "the safest bet"),
        "thing": ("option", "item", "entry", "line", "result", "picture", "part", "row"),
    },
)
#: Short questions about a detail of something just mentioned: after a look it is on view (a look),
#: after chat they ask about the assistant's answer (not a look).
DETAIL_FOLLOWUPS = expand(
    (
        "{and} the {detail}?",
        "what's the {detail}?",
        "does it say the {detail}?",
        "is {it} {verdict}?",
        "so is {it} {verdict}?",
        "how much is {it}?",
        "who {made} {it}?",
        "when does {it} {end}?",
        "what colour is {it}?",
        "how many {count} are there?",
        "which {thing2} is {best2}?",
        "{and} what does {it} say?",
    ),
    {
        "and": ("and", "what about", "okay and", "so"),
        "detail": (
            "price",
            "date",
            "total",
            "rating",
            "name",
            "address",
            "time",
            "size",
            "deadline",
            "score",
            "author",
            "brand",
            "delivery date",
            "fee",
            "last number",
            "title",
            "phone number",
            "due date",
        ),
        "it": ("it", "that", "that one", "this one", "the first one", "the red one", "the big one"),
        "verdict": ("worth it", "legit", "a good deal", "any good", "safe", "correct", "too much", "normal"),
        "made": ("made", "wrote", "sent", "posted", "sells"),
        "end": ("end", "start", "close", "expire", "arrive"),
        "count": ("items", "people", "messages", "options", "rows", "steps"),
        "thing2": ("one", "option", "plan", "size", "colour"),
        "best2": ("better", "cheaper", "the best", "faster", "nicer"),
    },
)
#: Follow-ups that need the screen only when they follow a look (they keep looking at it).
LOOK_FOLLOWUPS = expand(
    (
        "{and} now that I {changed}?",
        "what does the {part} say?",
        "{read} the {part} too",
        "anything else on there?",
        "what else do you see?",
        "{check} again",
        "and what's written {place}?",
    ),
    {
        "and": ("and", "what about", "okay, and"),
        "changed": ("scrolled down", "zoomed in", "changed it", "fixed it", "switched tabs", "moved it", "refreshed"),
        "part": ("next line", "rest of it", "bottom bit", "small print", "label on it", "caption", "second paragraph"),
        "read": ("read", "go over", "check"),
        "check": ("okay, check it", "look", "have a look", "take another look", "check it", "look once more"),
        "place": ("under it", "next to it", "at the bottom", "on the side", "in the corner"),
    },
)
#: Follow-ups on the assistant's answer or on the chat: never a look.
CHAT_FOLLOWUPS = expand(
    (
        "{and} for {who}?",
        "{and} the {ordinal} {point} you {said}?",
        "what did you mean by the {ordinal} {point}?",
        "{why}",
        "{and} if it {condition}?",
        "{and} how long does that take?",
    ),
    {
        "and": ("and", "what about", "how about", "okay and"),
        "who": ("kids", "beginners", "a small flat", "winter", "the weekend", "dinner", "someone my age", "two people"),
        "ordinal": ("second", "first", "last", "other", "third"),
        "point": ("tip", "option", "idea", "point", "suggestion", "thing"),
        "said": ("mentioned", "gave me", "said", "talked about"),
        "why": (
            "why is that?",
            "how come?",
            "really?",
            "are you sure about that?",
            "tell me more about that",
            "can you explain that again?",
            "wait, what do you mean?",
            "is that true?",
        ),
        "condition": ("rains", "goes wrong", "doesn't work", "costs too much", "takes longer"),
    },
)
#: Bare reactions: after a look they do not end it (a dependent follow-up after one still looks).
REACTIONS = (
    "haha",
    "oh nice",
    "hmm okay",
    "wow",
    "interesting",
    "oh no",
    "right",
    "huh",
    "cool",
    "ha, classic",
    "ugh",
    "oh wow",
)


def conversations(examples: Sequence[Row], *, count: int, seed: int = 0) -> list[list[Row]]:
    """`count` conversations built from `examples` (one side of a split); each a list of step rows."""
    rng = random.Random(f"conversations/{seed}")
    names = sorted({row.family for row in examples})
    yes = {f: [r.utterance for r in examples if r.family == f and r.label == 1] for f in names}
    no = {f: [r.utterance for r in examples if r.family == f and r.label == 0] for f in names}
    homes = [f for f in names if yes[f]]
    after = {f.name: list(f.after) for f in FAMILIES if f.name in names}
    all_yes = [u for f in homes for u in yes[f]]
    all_no = [u for f in names for u in no[f]]
    if not homes or not all_no:
        return []
    out: list[list[Row]] = []
    for _ in range(count):
        home = rng.choice(homes)
        steps: list[tuple[int, str]] = []
        looked = False  # the previous step looked (a look, or a follow-up that kept looking)
        reacted = False  # the previous step was a bare reaction right after a look
        for _ in range(rng.randint(3, 9)):
            draw = rng.random()
            if looked or reacted:
                if draw < 0.4:
                    follow = rng.choice(after.get(home) or DEPENDENT_FOLLOWUPS) if rng.random() < 0.3 else None
                    pool = rng.choice((DEPENDENT_FOLLOWUPS, DETAIL_FOLLOWUPS, LOOK_FOLLOWUPS))
                    step = (1, follow or rng.choice(pool))
                elif draw < 0.5:
                    step = (1, rng.choice(yes[home]))
                elif draw < 0.6 and looked:
                    step = (0, rng.choice(REACTIONS))
                else:
                    step = (0, _chat(rng, no[home], all_no))
            elif draw < 0.3:
                step = (1, rng.choice(yes[home] if rng.random() < 0.8 else all_yes))
            elif draw < 0.45 and steps:
                pool = rng.choice(
                    (DEPENDENT_FOLLOWUPS, DETAIL_FOLLOWUPS, CHAT_FOLLOWUPS, after.get(home) or CHAT_FOLLOWUPS)
                )
                step = (0, rng.choice(pool))
            elif draw < 0.5:
                step = (0, rng.choice(REACTIONS))
            else:
                step = (0, _chat(rng, no[home], all_no))
            reacted = looked and step[1] in REACTIONS
            looked = step[0] == 1
            steps.append(step)
        history = tuple(text for _, text in steps)
        out.append([Row(home, label, text, history[:i]) for i, (label, text) in enumerate(steps)])
    return out


def _chat(rng: random.Random, home_no: Sequence[str], all_no: Sequence[str]) -> str:
    """A `no` turn: the home family's own hard negatives half the time, else chat from anywhere on this side."""
    return rng.choice(home_no if home_no and rng.random() < 0.5 else all_no)
