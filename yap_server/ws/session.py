"""A session: persona, history kept as whole turns with token counts, and the sampling base.

History is trimmed with hysteresis: when it outgrows its budget, whole oldest turns are dropped
until it is under `trim_ratio` of the budget, so the prompt prefix (and the engine's prefix cache)
stays stable for many turns instead of shifting by one turn every time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from yap_engines.chat import FittedPrompt, fit_prompt, render_ids
from yap_engines.types import Sampling

Reasoning = Literal["hide", "stream"]
OPTION_KEYS = ("sanitize_output", "reasoning")


@dataclass(frozen=True)
class TurnOptions:
    """Per-turn output options carried in `sampling` on the wire."""

    sanitize_output: bool = True
    reasoning: Reasoning = "hide"


@dataclass(frozen=True)
class Persona:
    """Who the assistant is: the system prompt plus personality and gender, all of which reach the prompt."""

    chat_prompt: str = ""
    personality: str | None = None
    gender: str | None = None

    def system_text(self) -> str:
        lines = [self.chat_prompt.strip()]
        if self.personality:
            lines.append(f"Your personality: {self.personality.strip()}.")
        if self.gender:
            lines.append(f"Your gender: {self.gender.strip()}.")
        return "\n".join(line for line in lines if line)

    def messages(self) -> list[dict[str, str]]:
        text = self.system_text()
        return [{"role": "system", "content": text}] if text else []


@dataclass
class _Turn:
    messages: list[dict[str, str]]
    tokens: int


class History:
    """The conversation as whole turns (a user message and the replies after it), each with its token count.

    `tokenizer` is the chat model's; a tool-only deployment has none, renders no prompt, and counts
    nothing (its history only feeds the classifier)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self._turns: list[_Turn] = []

    def _count(self, message: dict[str, str]) -> int:
        if self._tokenizer is None:
            return 0
        return len(render_ids(self._tokenizer, [message], add_generation_prompt=False))

    def add(self, role: str, content: str) -> None:
        message = {"role": role, "content": content}
        if role == "user" or not self._turns:
            self._turns.append(_Turn([message], self._count(message)))
        else:
            self._turns[-1].messages.append(message)
            self._turns[-1].tokens += self._count(message)

    def replace_last_assistant(self, content: str) -> bool:
        """Cut the newest assistant reply to `content` (what was actually spoken); False when there is none."""
        if not self._turns or self._turns[-1].messages[-1]["role"] != "assistant":
            return False
        turn = self._turns[-1]
        old = turn.messages[-1]
        turn.tokens -= self._count(old)
        turn.messages[-1] = {"role": "assistant", "content": content}
        turn.tokens += self._count(turn.messages[-1])
        return True

    def withdraw_last_turn(self) -> None:
        """Take the newest turn back out (its utterance was refused before any work)."""
        if self._turns:
            self._turns.pop()

    @property
    def tokens(self) -> int:
        return sum(turn.tokens for turn in self._turns)

    @property
    def turn_count(self) -> int:
        return len(self._turns)

    def messages(self) -> list[dict[str, str]]:
        return [m for turn in self._turns for m in turn.messages]

    def drop_oldest(self, count: int) -> None:
        del self._turns[: min(count, len(self._turns) - 1)]

    def trim(self, budget: int, ratio: float) -> int:
        """When over `budget` tokens, drop whole oldest turns (never the newest) to `ratio * budget`."""
        dropped = self.trim_count(budget, ratio)
        del self._turns[:dropped]
        return dropped

    def trim_count(self, budget: int, ratio: float, extra_tokens: int = 0) -> int:
        """How many oldest turns `trim` would drop (with `extra_tokens` of a turn still to come); changes nothing."""
        total = self.tokens + extra_tokens
        if total <= budget:
            return 0
        target = int(budget * ratio)
        dropped = 0
        while len(self._turns) - dropped > 1 and total > target:
            total -= self._turns[dropped].tokens
            dropped += 1
        return dropped

    def messages_after(self, dropped: int) -> list[dict[str, str]]:
        """The messages of every turn but the `dropped` oldest."""
        return [m for turn in self._turns[dropped:] for m in turn.messages]


@dataclass
class Session:
    """One client's conversation state on a connection."""

    session_id: str
    persona: Persona
    history: History
    sampling: Sampling
    options: TurnOptions = field(default_factory=TurnOptions)

    @classmethod
    def create(
        cls,
        session_id: str,
        persona: Persona,
        tokenizer: Any,
        history: Sequence[Mapping[str, str]],
        sampling: Sampling,
        options: TurnOptions,
    ) -> Session:
        session = cls(session_id, persona, History(tokenizer), sampling, options)
        for item in history:
            session.history.add(item["role"], item["content"])
        return session

    def build_prompt(self, tokenizer: Any, prompt_budget: int, history_budget: int, trim_ratio: float) -> FittedPrompt:
        """Persona + history (+ generation prompt), trimmed to fit: the messages kept and their token ids.
        May raise `ContextTooLongError`."""
        persona = self.persona.messages()
        self.history.trim(history_budget, trim_ratio)
        fitted = fit_prompt(tokenizer, persona, self.history.messages(), prompt_budget)
        if fitted.dropped_turns:
            # The exact fit had to drop more than the estimate; keep history in step with the prompt.
            self.history.drop_oldest(fitted.dropped_turns)
        return fitted
