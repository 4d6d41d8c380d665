"""Chat prompts with the model's own tokenizer: render the chat template, count tokens, fit a budget.

`stable_prefix` gives the token ids of a prompt still being spoken that every continuation of it
starts with (what a warm computes into the prefix cache). `fit_prompt` keeps the persona (system
messages) and drops whole oldest turns until the rendered prompt fits the budget; a turn is a user
message and the replies that follow it. It raises `ContextTooLongError` when the persona alone (or
the persona plus the newest turn) cannot fit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import BackendUnavailableError, ContextTooLongError

Message = Mapping[str, str]


def load_tokenizer(model: str) -> Any:
    """Load a model's Hugging Face tokenizer (local directory or hub id)."""
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise BackendUnavailableError('transformers is not installed: run `pip install "yap[server]"`') from exc
    return AutoTokenizer.from_pretrained(model)


def render_ids(
    tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = True, **template_kwargs: Any
) -> list[int]:
    """Token ids of `messages` rendered with the tokenizer's chat template (no double BOS)."""
    if not messages:
        return []
    rendered = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=add_generation_prompt, tokenize=True, **template_kwargs
    )
    # transformers 5 returns a BatchEncoding; older versions a plain list.
    ids = rendered["input_ids"] if not isinstance(rendered, list) else rendered
    return list(ids)


def render_text(
    tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = True, **template_kwargs: Any
) -> str:
    """The chat template's text for `messages`."""
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], add_generation_prompt=add_generation_prompt, tokenize=False, **template_kwargs
    )
    return str(text)


CONTINUATIONS = ("", " a", "a", "A", "1", " 1", ".", "?", " ?", "'s", "-", "\n", " ", "\u00e9", "\u3042")
"""What may follow the stable text in the final message. The warm's prefix is common to the renders with
each of them, so no token the final text could merge with, or the template could place after it, is in it."""


PREFIX_CHUNK = 64  # items compared at once by `shared_prefix_length`


def shared_prefix_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """The length of the longest common prefix of two sequences (token ids, or texts as characters).

    Compared 64 items at a time by slice equality (done in C), then item by item within the first chunk that
    differs: a few microseconds for two 1,000-token prompts, where a loop over every token takes about 30."""
    if type(a) is not type(b):  # a list never equals a tuple
        a, b = tuple(a), tuple(b)
    n, i = min(len(a), len(b)), 0
    while i + PREFIX_CHUNK <= n and a[i : i + PREFIX_CHUNK] == b[i : i + PREFIX_CHUNK]:
        i += PREFIX_CHUNK
    while i < n and a[i] == b[i]:
        i += 1
    return i


def common_prefix(rows: Sequence[Sequence[Any]]) -> list[Any]:
    """The longest common prefix of sequences (token id lists, or texts as characters)."""
    first = list(rows[0])
    return first[: min((shared_prefix_length(first, row) for row in rows[1:]), default=len(first))]


def stable_prefix(tokenizer: Any, messages: Sequence[Message], role: str, partial: str) -> list[int]:
    """Token ids of `messages` plus a `role` message that starts with `partial`, cut where any continuation
    of `partial` could change them (see `CONTINUATIONS`): a strict prefix of every such render.

    With a Hugging Face tokenizer the renders' shared head (persona and history, up to the last special
    token before they differ) is tokenized once: special tokens are split out before anything else, so
    the text on either side of one tokenizes on its own. Only the tails are tokenized per continuation."""
    rows_messages = [[*messages, {"role": role, "content": partial + tail}] for tail in CONTINUATIONS]
    cut = 0
    specials = _special_tokens(tokenizer)
    if specials:
        texts = [render_text(tokenizer, rendered) for rendered in rows_messages]
        head = "".join(common_prefix(texts))
        cut = max((head.rfind(token) + len(token) for token in specials if token in head), default=0)
    if cut == 0:
        return common_prefix([render_ids(tokenizer, rendered) for rendered in rows_messages])
    head_ids = tokenizer.encode(texts[0][:cut], add_special_tokens=False)
    return list(head_ids) + common_prefix([tokenizer.encode(text[cut:], add_special_tokens=False) for text in texts])


def _special_tokens(tokenizer: Any) -> list[str]:
    """The special tokens a Hugging Face tokenizer splits text on first; none for other tokenizers."""
    try:
        from transformers import PreTrainedTokenizerBase
    except ImportError:
        return []
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        return []
    return [str(token) for token, added in _added(tokenizer) if added]


def _added(tokenizer: Any) -> list[tuple[str, bool]]:
    """(content, special) of every added token: the ones split out before the model's own tokenization."""
    return [(token.content, bool(token.special)) for token in tokenizer.added_tokens_decoder.values()]


def count_tokens(tokenizer: Any, text: str) -> int:
    """Number of tokens in `text` (no special tokens added)."""
    return len(tokenizer.encode(text, add_special_tokens=False))


def split_turns(history: Sequence[Message]) -> list[list[Message]]:
    """Group history into turns: each user message starts one; messages before the first user message form one."""
    turns: list[list[Message]] = []
    for message in history:
        if message.get("role") == "user" or not turns:
            turns.append([])
        turns[-1].append(message)
    return turns


@dataclass(frozen=True)
class FittedPrompt:
    """A prompt that fits its budget: the messages kept, their token ids, and how many turns were dropped."""

    messages: list[Message]
    token_ids: list[int]
    dropped_turns: int


def fit_prompt(
    tokenizer: Any, persona: Sequence[Message], history: Sequence[Message], budget: int, **template_kwargs: Any
) -> FittedPrompt:
    """Render `persona + history`, dropping whole oldest turns of `history` until it fits `budget` tokens.

    The persona is always kept and the newest turn is never dropped. Takes O(log turns) renders.
    """
    turns = split_turns(history)

    def render(dropped: int) -> tuple[list[Message], list[int]]:
        messages = [*persona, *(m for turn in turns[dropped:] for m in turn)]
        return messages, render_ids(tokenizer, messages, **template_kwargs)

    messages, ids = render(0)
    if len(ids) <= budget:
        return FittedPrompt(messages, ids, 0)
    persona_ids = render_ids(tokenizer, persona, **template_kwargs)
    if len(persona_ids) > budget:
        raise ContextTooLongError(
            f"the persona (system prompt) alone is {len(persona_ids)} tokens, over the prompt budget of {budget}: "
            "shorten chat_prompt or raise CHAT_MAX_LEN"
        )
    last = max(len(turns) - 1, 0)
    messages, ids = render(last)
    if len(ids) > budget:
        raise ContextTooLongError(
            f"the newest turn does not fit: {len(ids)} tokens with the persona, over the prompt budget of {budget}; "
            "send a shorter utterance or raise CHAT_MAX_LEN"
        )
    low, high = 1, last  # render(low - 1) is too long, render(high) fits
    best = (messages, ids, last)
    while low <= high:
        mid = (low + high) // 2
        mid_messages, mid_ids = render(mid)
        if len(mid_ids) <= budget:
            best, high = (mid_messages, mid_ids, mid), mid - 1
        else:
            low = mid + 1
    return FittedPrompt(best[0], best[1], best[2])
