"""The client's own function tools on `/v1/responses`: which the chat model may call, and how forced.

Every declared function tool but the classifier's (`RESPONSES_TOOL_NAME`) goes to the chat model:
its definition into the prompt and its calls parsed out of the reply (`Generation`'s tool-call
stage), where they become `function_call` output items. The classifier's tool stays the
classifier's: decided before the reply, never shown to the model. `tool_choice` `required` or
`{"type": "function", "name": ...}` forces a call by guided decoding, as on `/v1/chat/completions`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from yap_engines.errors import InvalidRequestError
from yap_engines.function_tools import FunctionTool, ToolSet

from ..frames import WireError
from .events import FunctionCallInput, FunctionCallOutputInput, ResponseCreate


def _invalid(message: str, param: str) -> WireError:
    return WireError("invalid_request", message, extra={"param": param})


def client_tools(event: ResponseCreate, classifier_tool: str) -> ToolSet | None:
    """The model's tools for this response (None when there are none), or `WireError` naming the field."""
    tools: list[FunctionTool] = []
    for index, spec in enumerate(event.tools):
        if spec.type != "function" or spec.name == classifier_tool:
            continue
        where = f"tools[{index}]"
        if not spec.name:
            raise _invalid(f"{where}.name: a function tool needs a name", f"{where}.name")
        if spec.name in (tool.name for tool in tools):
            raise _invalid(f"{where}.name: {spec.name!r} is declared twice", f"{where}.name")
        try:
            tools.append(FunctionTool(spec.name, spec.description or "", spec.parameters or {"type": "object"}))
        except InvalidRequestError as exc:
            raise _invalid(f"{where}.parameters: {exc}", f"{where}.parameters") from None
    choice: Any = event.tool_choice
    named = None
    if isinstance(choice, dict):
        named = choice.get("name")
        if choice.get("type") != "function" or not isinstance(named, str):
            raise _invalid('tool_choice: must be "auto", "none", "required" or {"type": "function", "name": ...}',
                           "tool_choice")  # fmt: skip
        if named == classifier_tool:
            return None  # the classifier's tool: its decision, not the model's
        if named not in (tool.name for tool in tools):
            declared = ", ".join(tool.name for tool in tools) or "none"
            raise _invalid(f"tool_choice: names {named!r}, which is not a declared function (declared: {declared})",
                           "tool_choice")  # fmt: skip
        choice = "named"
    if not tools:
        if choice in ("required", "named"):
            raise _invalid("tool_choice: it forces a call, but no function tools are declared", "tool_choice")
        return None
    return ToolSet(tuple(tools), choice, named, event.parallel_tool_calls is not False)


def check_outputs(items: Sequence[Any]) -> None:
    """Every `function_call_output` answers a `function_call` before it in the conversation."""
    seen: set[str] = set()
    for index, item in enumerate(items):
        if isinstance(item, FunctionCallInput):
            seen.add(item.call_id)
        elif isinstance(item, FunctionCallOutputInput) and item.call_id not in seen:
            raise _invalid(
                f"input: a function_call_output's call_id {item.call_id!r} matches no function_call before it; "
                "send the function_call item (or previous_response_id) with it",
                f"input[{index}].call_id",
            )
