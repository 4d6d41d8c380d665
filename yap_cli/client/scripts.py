"""What the `yap client` commands say: the persona, the scripted conversations, the warm history and
its recall questions, the personality variants, the screen request and its analysis."""

from __future__ import annotations

# Worded for the embedded default (SmolLM2-135M-Instruct), which answers it in plain English at temperature 0.
PERSONA = "You are a helpful, brief voice assistant. Answer in one short sentence."
WARMUP_MESSAGE = "Hello! Who are you?"
CANCEL_MESSAGE = "Tell me a long story about the sea."
RECOVERY_MESSAGE = "Sorry, let's start over: how are you?"
SCREEN_REQUEST = "can you take a look at my screen?"
SCREEN_ANALYSIS = (
    "A code editor with a Python file open; the terminal below shows "
    "\"NameError: name 'total' is not defined\" on line 12."
)

CONVERSATION = (
    "Hi there! How are you today?",
    "What's a good name for a cat?",
    "Can you tell me a fun fact about space?",
    "How long does it take light from the sun to reach us?",
    "What should I cook for dinner tonight?",
    "Give me a quick tip for sleeping better.",
    "What's the capital of Australia?",
    "Tell me a very short joke.",
    "How do I stay focused while working?",
    "Thanks, that's all for now. Goodbye!",
)
"""The 10-turn script of `conversation` (seed: CONVERSATION_HISTORY_PROMPTS)."""


def _pairs(*exchanges: tuple[str, str]) -> tuple[dict[str, str], ...]:
    return tuple(
        {"role": role, "content": text}
        for user, bot in exchanges
        for role, text in (("user", user), ("assistant", bot))
    )


WARM_HISTORY = _pairs(
    ("Hey! I'm Maya, by the way.", "Nice to meet you, Maya! What's on your mind today?"),
    ("I just got back from a trip to Lisbon.", "Lisbon! The tiles and the trams. How was it?"),
    ("Amazing. I ate way too many pastéis de nata.", "Fair, they're hard to resist. Any favourite spot?"),
    ("A tiny bakery in Belém. Also, my dog Pepper stayed with my sister.", "I hope Pepper behaved for her!"),
    ("Mostly. He chewed one of her shoes. I'm a nurse, so I work nights next week.", "Night shifts are tough."),
    ("Yeah. My favourite colour is green, if you want something random.", "Noted: green it is."),
)
"""A pre-built conversation (`history` in `start`) for recall: `live --warm` and `history`."""

RECALL = (
    "Do you remember my name?",
    "Which city did I just visit?",
    "What pastry did I eat too much of?",
    "What's my dog called, and where did he stay?",
    "What do I do for work?",
    "And what's my favourite colour?",
)
"""Follow-ups whose answers are in `WARM_HISTORY`."""

PERSONA_VARIANTS = {
    "wholesome": "You are a warm, wholesome voice assistant. Answer in one short sentence.",
    "flirty": "You are a playful, flirty voice assistant. Answer in one short sentence.",
    "savage": "You are a blunt, savage-witted voice assistant. Answer in one short sentence.",
    "calm": "You are a calm, soothing voice assistant. Answer in one short sentence.",
}
"""personality → chat_prompt, for the personality switch test (seed: PERSONA_VARIANTS)."""

SWITCH_MESSAGES = (
    "Hey, how's your day going?",
    "Tell me something about yourself.",
    "What would you do on a rainy Sunday?",
    "Give me one piece of advice.",
)
"""What `personality` says after each persona change (cycled)."""


def persona_for(personality: str) -> str:
    """The chat_prompt of a personality (an unknown one gets the default persona, naming it)."""
    return PERSONA_VARIANTS.get(personality, f"{PERSONA} Your personality: {personality}.")
