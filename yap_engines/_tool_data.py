"""The embedded labelled set for the demo tool classifier: does the user want the assistant to look?

Positives ask the assistant to look at, read or react to what is on the user's screen, often
without the word "screen". Negatives are ordinary chat, including hard negatives that use
look/see/read/screen words without asking for a look ("I saw a movie", "the screen door").
Built from templates crossed with objects, so the set is varied but fixed and deterministic.
"""

from __future__ import annotations

import itertools
import random

_LOOK_VERBS = (
    "look at",
    "check",
    "take a look at",
    "have a look at",
    "read",
    "glance at",
    "see",
    "review",
    "scan",
    "go over",
)
_THINGS = (
    "my screen",
    "this page",
    "this error",
    "what I have open",
    "this window",
    "the chart here",
    "this email",
    "this code",
    "this document",
    "the message I just got",
    "this tab",
    "this spreadsheet",
    "this form",
    "the picture I have up",
    "this diagram",
    "my desktop",
)
_POSITIVE_TEMPLATES = (
    "can you {verb} {thing}?",
    "please {verb} {thing}",
    "could you {verb} {thing} for me",
    "{verb} {thing}",
    "hey, {verb} {thing} real quick",
    "would you mind if you {verb} {thing}",
)
_POSITIVE_FREE = (
    "what do you see right now?",
    "what's on my screen?",
    "what am I looking at?",
    "can you see this?",
    "what does this say?",
    "read this out loud for me",
    "what is this error about?",
    "is this right?",
    "does this look okay to you?",
    "tell me what's happening here",
    "what does that button do?",
    "help me with what I have open",
    "which option should I click here?",
    "can you read the text in this box?",
    "what's wrong with this line?",
    "summarize what's in front of me",
    "what's that icon in the corner?",
    "translate what's written here",
    "how do I fix this warning?",
    "what do you make of this graph?",
    "check if I filled this in correctly",
    "can you tell what app this is?",
    "is there a typo in this?",
    "what does this popup want from me?",
    "look!",
    "do you notice anything odd here?",
    "describe this image for me",
    "what color is the thing I'm showing you?",
    "find the total on this bill",
    "which of these products is cheaper?",
    "what time does this ticket say?",
    "read me the first paragraph",
)
_NEGATIVE_FREE = (
    "how are you today?",
    "tell me a joke",
    "what's the weather like tomorrow?",
    "I saw a movie last night",
    "I'll see you later",
    "we should look into a new phone plan",
    "I read a great book this week",
    "the screen door is broken again",
    "my screen time is way too high",
    "let's see what happens",
    "I can't see the point of meetings",
    "look, I'm just tired",
    "you should see my cat",
    "see, I told you",
    "what's the capital of France?",
    "set a timer for ten minutes",
    "remind me to call mom",
    "what's a good recipe for pasta?",
    "how far is the moon?",
    "I'm looking forward to the weekend",
    "sing me a song",
    "what should I name my dog?",
    "do you like music?",
    "I looked everywhere for my keys",
    "tell me something interesting",
    "how do I make coffee?",
    "thanks, that helps",
    "good morning!",
    "what's two plus two?",
    "I watched the game on TV",
    "my sister reads a lot",
    "I need a vacation",
    "how tall is mount everest?",
    "what does photosynthesis mean?",
    "explain gravity simply",
    "I'm bored",
    "any podcast recommendations?",
    "give me a motivational quote",
    "what year is it?",
    "I saw a bird outside",
    "he looked really happy",
    "the new screen protector arrived",
    "see you soon",
    "can you keep a secret?",
    "what's your favorite color?",
    "who wrote hamlet?",
    "I have a headache",
    "is it going to rain?",
    "we looked at houses yesterday",
    "let me think about it",
)
_NEGATIVE_TEMPLATES = (
    "I {past} {obj} yesterday",
    "my friend {past} {obj}",
    "have you ever {past} {obj}?",
    "we {past} {obj} together",
    "I think I {past} {obj} once",
)
_PAST = ("saw", "read", "watched", "looked at", "checked out")
_OBJECTS = (
    "a movie",
    "a great article",
    "an old photo album",
    "the sunset",
    "a documentary",
    "the news",
    "a funny video",
    "the stars",
    "a concert",
    "a new restaurant",
)


def labelled_utterances() -> list[tuple[str, int]]:
    """(utterance, label) pairs; label 1 means "take a screenshot / look"."""
    positives = [t.format(verb=v, thing=o) for t, v, o in itertools.product(_POSITIVE_TEMPLATES, _LOOK_VERBS, _THINGS)]
    rng = random.Random(7)
    positives = rng.sample(positives, 220) + list(_POSITIVE_FREE)
    negatives = [t.format(past=p, obj=o) for t, p, o in itertools.product(_NEGATIVE_TEMPLATES, _PAST, _OBJECTS)]
    negatives = rng.sample(negatives, 140) + list(_NEGATIVE_FREE)
    data = [(text, 1) for text in positives] + [(text, 0) for text in negatives]
    rng.shuffle(data)
    return data


def chit_chat_history() -> tuple[str, ...]:
    """Ordinary earlier user turns, used to teach the classifier that history alone is not a request."""
    return _NEGATIVE_FREE[:20]
