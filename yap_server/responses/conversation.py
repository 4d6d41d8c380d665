"""The conversation behind a `/v1/responses` request: chaining by `previous_response_id` and chat messages.

A connection keeps its last few ended responses (input and output) in a small cache. A request
that names one of them continues its conversation with only the new input items. When the named
response was cut short (cancelled, or stopped at its token cap) and the new input starts with an
assistant message, that message is what the client actually played, so it replaces the cut reply.

Rendering for the chat template: `instructions` and the leading developer messages form the
persona (system message); later developer messages stay in place as system messages; the
classifier tool's `function_call_output` becomes a user message (its result reads like a `/ws`
followup: `SCREEN_ANALYSIS_PREFIX` + result, its call is not rendered); a call of any other function
becomes an assistant message's `tool_calls` and its output a `tool` message, which the chat template
or the text fallback renders (`yap_engines.function_tools.tool_messages`); consecutive text messages
of one role are merged, since many chat templates insist that roles alternate.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .events import FunctionCallInput, FunctionCallOutputInput, MessageInput, OutputItem

Item = MessageInput | FunctionCallInput | FunctionCallOutputInput


@dataclass(frozen=True)
class EndedResponse:
    """A response that ended: the conversation it answered and what it produced."""

    response_id: str
    conversation: tuple[Item, ...]
    output: tuple[Item, ...]
    cut: bool

    @classmethod
    def of(
        cls, response_id: str, conversation: Sequence[Item], output: Sequence[OutputItem], cut: bool
    ) -> EndedResponse:
        return cls(response_id, tuple(conversation), tuple(as_input(item) for item in output), cut)


def as_input(item: OutputItem) -> Item:
    """An output item as the input item a client would send back for it."""
    if item.type == "message":
        return MessageInput(role="assistant", content="".join(part.text for part in item.content))
    return FunctionCallInput(type="function_call", call_id=item.call_id, name=item.name, arguments=item.arguments)


class ResponseCache:
    """The last `capacity` ended responses of one connection, by id (oldest evicted first)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._ended: OrderedDict[str, EndedResponse] = OrderedDict()

    def remember(self, ended: EndedResponse) -> None:
        self._ended[ended.response_id] = ended
        while len(self._ended) > self.capacity:
            self._ended.popitem(last=False)

    def get(self, response_id: str) -> EndedResponse | None:
        return self._ended.get(response_id)


def chained(previous: EndedResponse | None, new_items: Sequence[Item]) -> list[Item]:
    """The whole conversation: the previous response's input and output, then `new_items`."""
    if previous is None:
        return list(new_items)
    output: Sequence[Item] = previous.output
    first = new_items[0] if new_items else None
    if previous.cut and isinstance(first, MessageInput) and first.role == "assistant":
        output = [item for item in output if not isinstance(item, MessageInput)]  # what was spoken replaces it
    return [*previous.conversation, *output, *new_items]


@dataclass(frozen=True)
class ChatPrompt:
    """Chat-template messages: the persona (kept whole) and the history (trimmed oldest first)."""

    persona: list[dict[str, Any]]
    history: list[dict[str, Any]]


def chat_prompt(items: Sequence[Item], instructions: str | None, tool_name: str, tool_result_prefix: str) -> ChatPrompt:
    """Render a conversation as chat messages (see the module docstring for the rules)."""
    names = {item.call_id: item.name for item in items if isinstance(item, FunctionCallInput)}
    system = [instructions.strip()] if instructions and instructions.strip() else []
    start = 0
    while start < len(items):
        item = items[start]
        if not (isinstance(item, MessageInput) and item.role in ("developer", "system")):
            break
        if item.text.strip():
            system.append(item.text.strip())
        start += 1
    persona = [{"role": "system", "content": "\n\n".join(system)}] if system else []
    history: list[dict[str, Any]] = []
    for item in items[start:]:
        if isinstance(item, FunctionCallInput):
            if item.name == tool_name:
                continue  # the classifier's call says nothing; its output below does
            call = {
                "id": item.call_id,
                "type": "function",
                "function": {"name": item.name, "arguments": item.arguments},
            }
            last = history[-1] if history else None
            if last is not None and last["role"] == "assistant":
                history[-1] = {**last, "tool_calls": [*last.get("tool_calls", ()), call]}
            else:
                history.append({"role": "assistant", "content": "", "tool_calls": [call]})
            continue
        if isinstance(item, FunctionCallOutputInput) and names.get(item.call_id, tool_name) != tool_name:
            history.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text})
            continue
        if isinstance(item, FunctionCallOutputInput):
            role, text = "user", tool_result_prefix + item.text
        else:
            role = "system" if item.role in ("developer", "system") else item.role
            text = item.text
        if not text.strip():
            continue
        if history and history[-1]["role"] == role and not history[-1].get("tool_calls"):
            history[-1] = {"role": role, "content": history[-1]["content"] + "\n\n" + text}
        else:
            history.append({"role": role, "content": text})
    return ChatPrompt(persona, history)


def user_texts(items: Sequence[Item]) -> list[str]:
    """The text of every user message, oldest first (what the tool classifier reads)."""
    return [item.text for item in items if isinstance(item, MessageInput) and item.role == "user"]
