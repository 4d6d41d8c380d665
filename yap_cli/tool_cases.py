"""The tool regression cases replayed by `yap client tool`: multi-step conversations where each
user step is labelled with whether the assistant should look at the screen ("yes") or not ("no")."""

from __future__ import annotations

CASES: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("greeting then a look", (("hey there, how's it going?", "no"), ("can you take a look at my screen?", "yes"))),
    ("error on screen", (("I'm stuck on something", "no"), ("what does this error mean?", "yes"))),
    ("movie talk", (("I saw a great movie yesterday", "no"), ("have you seen it?", "no"))),
    ("read it out", (("I got a letter from the bank", "no"), ("read this for me please", "yes"))),
    ("screen door", (("my screen door is broken", "no"), ("how do I fix it?", "no"))),
    ("chart", (("check out this chart", "yes"), ("is the trend going up?", "yes"))),
    ("small talk", (("tell me a joke", "no"), ("another one!", "no"), ("thanks, that was funny", "no"))),
    ("form help", (("help me fill in this form", "yes"), ("did I get the date right here?", "yes"))),
    ("see you", (("alright, that's all", "no"), ("see you later", "no"))),
    ("code review", (("can you review this code?", "yes"), ("what's wrong with line five?", "yes"))),
    ("looking forward", (("I'm looking forward to the trip", "no"), ("what should I pack?", "no"))),
    ("which button", (("which button should I click here?", "yes"),)),
    ("weather", (("what's the weather tomorrow?", "no"), ("and on sunday?", "no"))),
    ("email", (("I have an email open", "no"), ("does this email sound rude?", "yes"))),
    ("reading habit", (("I read a lot of books", "no"), ("recommend me one", "no"))),
    ("describe", (("describe what you see", "yes"),)),
)
