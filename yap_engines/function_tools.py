"""Function tools a client declares (OpenAI's `tools`), how they reach the prompt, and how calls are forced.

- `FunctionTool` / `ToolSet`: validated definitions (a name, a description, a JSON Schema for the
  arguments, checked with `jsonschema`), the `tool_choice` (`none`, `auto`, `required`, or one named
  function) and `parallel_tool_calls`.
- `ToolSet.guided()`: the `StructuredOutput` that forces a call (`required`: an array of
  `{"name", "parameters"}` objects, one per call, each matching its tool's schema — vLLM's shape;
  a named function: its arguments object), and `ToolSet.parser()`: the parser for the reply.
- `tool_messages()`: a conversation with tool calls and results rendered for a chat template. A
  template that reads `tools` (Qwen2.5/3, Llama 3.1+, Mistral, Hermes…) gets OpenAI's structured
  messages (arguments as objects) and `tools=`; any other (SmolLM2's, the demo model's) gets the
  text fallback: the definitions in the system message with the `<tool_call>` format to answer in,
  earlier calls as that text in the assistant's message, results as `<tool_response>` user messages.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidRequestError
from .tool_calls import FirstCallOnly, GuidedParser, ToolCallParser, builtin_parser
from .types import StructuredOutput

EMPTY_OBJECT: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class FunctionTool:
    """One declared function. `parameters` is a JSON Schema (checked when built)."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=lambda: dict(EMPTY_OBJECT))

    def __post_init__(self) -> None:
        check_schema(self.parameters)

    def as_openai(self) -> dict[str, Any]:
        function: dict[str, Any] = {"name": self.name, "parameters": dict(self.parameters)}
        if self.description:
            function["description"] = self.description
        return {"type": "function", "function": function}

    def validate(self, arguments: Any) -> None:
        """Raise `jsonschema.ValidationError` when `arguments` does not match the schema."""
        import jsonschema

        jsonschema.validators.validator_for(self.parameters)(self.parameters).validate(arguments)


def check_schema(schema: Any) -> None:
    """Raise `InvalidRequestError` unless `schema` is a valid JSON Schema object.

    Checking against the 2020-12 metaschema costs milliseconds per tool, and an agent sends the same
    tools with every turn: the verdict is memoised by the schema's canonical JSON (a bounded memo of
    a pure function), so only a new schema pays."""
    if not isinstance(schema, Mapping):
        raise InvalidRequestError("must be a JSON Schema object")
    try:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"must be JSON: {exc}") from None
    problem = _schema_problem(canonical)
    if problem is not None:
        raise InvalidRequestError(problem)


@functools.lru_cache(maxsize=512)
def _schema_problem(canonical: str) -> str | None:
    """What is wrong with the schema whose canonical JSON is `canonical` (None: it is valid)."""
    schema = json.loads(canonical)
    try:
        import jsonschema
    except ImportError as exc:  # pragma: no cover - a server dependency
        raise InvalidRequestError('jsonschema is not installed: run `pip install "yap[server]"`') from exc
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(part) for part in exc.path)
        return f"not a valid JSON Schema{f' at {where}' if where else ''}: {exc.message}"
    return None


@dataclass(frozen=True)
class ToolSet:
    """The tools of one request. `choice`: `none`, `auto`, `required`, or the name of one function
    (`named`). `parallel`: more than one call allowed in a reply (OpenAI's default)."""

    tools: tuple[FunctionTool, ...]
    choice: str = "auto"
    named: str | None = None
    parallel: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(tool.name for tool in self.tools)

    @property
    def active(self) -> bool:
        """The model may call (the definitions go into the prompt and the reply is parsed)."""
        return bool(self.tools) and self.choice != "none"

    @property
    def forced(self) -> bool:
        """A call is forced by guided decoding (`required` or a named function)."""
        return self.active and self.choice in ("required", "named")

    def tool(self, name: str) -> FunctionTool:
        return next(tool for tool in self.tools if tool.name == name)

    def guided(self) -> StructuredOutput | None:
        """The constraint that forces a call (None under `auto`/`none`)."""
        if not self.forced:
            return None
        if self.named is not None:
            return StructuredOutput.json_schema(dict(self.tool(self.named).parameters))
        items = [
            {
                "type": "object",
                "properties": {"name": {"type": "string", "enum": [tool.name]}, "parameters": dict(tool.parameters)},
                "required": ["name", "parameters"],
                "additionalProperties": False,
            }
            for tool in self.tools
        ]
        schema: dict[str, Any] = {"type": "array", "minItems": 1, "items": {"anyOf": items}}
        if not self.parallel:
            schema["maxItems"] = 1
        return StructuredOutput.json_schema(schema)

    def parser(self, fmt: str, tokenizer: Any = None) -> ToolCallParser | None:
        """A new parser for one reply: guided forms under `required`/named, else the model's format `fmt`."""
        if not self.active:
            return None
        if self.forced:
            return GuidedParser(self.names, self.named)
        parser: ToolCallParser
        if fmt.startswith("vllm:") or fmt not in ("hermes", "llama3_json", "mistral"):
            from .vllm_tool_parsers import VllmToolParser

            openai_tools = [tool.as_openai() for tool in self.tools]
            parser = VllmToolParser(fmt.removeprefix("vllm:"), tokenizer, openai_tools, self.names)
        else:
            parser = builtin_parser(fmt, self.names)
        return parser if self.parallel else FirstCallOnly(parser)


FALLBACK_INSTRUCTIONS = (
    "You can call these functions (JSON Schema of each function's arguments):\n{tools}\n\n"
    "To call one, answer with exactly:\n<tool_call>\n"
    '{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}\n</tool_call>\n'
    "and nothing else. Results come back in <tool_response> messages; then answer the user."
)
FORCED_INSTRUCTIONS = (
    "You must call one of these functions (JSON Schema of each function's arguments):\n{tools}\n\n"
    'Answer with a JSON list of calls: [{{"name": "<function name>", "parameters": {{<arguments>}}}}].'
)

NAMED_INSTRUCTIONS = (
    "Call the function {name} now (JSON Schema of its arguments):\n{tools}\n\n"
    "Answer with only its arguments, as one JSON object."
)


def fallback_system_text(tools: ToolSet) -> str:
    """The tool definitions as system-prompt text, for a template that does not render tools."""
    listing = "\n".join(
        json.dumps({"name": t.name, "description": t.description, "parameters": dict(t.parameters)}, ensure_ascii=False)
        for t in tools.tools
    )
    if tools.forced and tools.named is not None:
        named = tools.tool(tools.named)
        listing = json.dumps(
            {"name": named.name, "description": named.description, "parameters": dict(named.parameters)},
            ensure_ascii=False,
        )
        return NAMED_INSTRUCTIONS.format(name=named.name, tools=listing)
    template = FORCED_INSTRUCTIONS if tools.forced else FALLBACK_INSTRUCTIONS
    return template.format(tools=listing)


def _arguments_object(arguments: Any) -> Any:
    if isinstance(arguments, str):
        try:
            return json.loads(arguments)
        except json.JSONDecodeError:
            return arguments
    return arguments


@dataclass(frozen=True)
class RenderedTools:
    """Messages ready for `apply_chat_template`, and the extra template arguments (`tools=`)."""

    messages: list[dict[str, Any]]
    template_kwargs: dict[str, Any]


def tool_messages(messages: Sequence[Mapping[str, Any]], tools: ToolSet | None, native: bool) -> RenderedTools:
    """Render OpenAI messages (assistant `tool_calls`, `role: "tool"` results) for a chat template.

    `native`: the template renders tools itself (see the module docstring); else the text fallback."""
    names = {
        call["id"]: call["function"]["name"] for m in messages for call in (m.get("tool_calls") or ()) if "id" in call
    }
    if native:
        out: list[dict[str, Any]] = []
        for m in messages:
            message = {"role": m["role"], "content": m.get("content") or ""}
            if m.get("tool_calls"):
                message["tool_calls"] = [
                    {
                        "id": call.get("id"),
                        "type": "function",
                        "function": {
                            "name": call["function"]["name"],
                            "arguments": _arguments_object(call["function"].get("arguments", "{}")),
                        },
                    }
                    for call in m["tool_calls"]
                ]
            if m["role"] == "tool":
                message["tool_call_id"] = m.get("tool_call_id")
                message["name"] = names.get(m.get("tool_call_id"), "")
            out.append(message)
        kwargs = {"tools": [tool.as_openai() for tool in tools.tools]} if tools is not None and tools.active else {}
        return RenderedTools(out, kwargs)
    flat: list[dict[str, Any]] = []
    for m in messages:
        role, text = m["role"], m.get("content") or ""
        if m.get("tool_calls"):
            blocks = [
                "<tool_call>\n"
                + json.dumps(
                    {
                        "name": call["function"]["name"],
                        "arguments": _arguments_object(call["function"].get("arguments")),
                    },
                    ensure_ascii=False,
                )
                + "\n</tool_call>"
                for call in m["tool_calls"]
            ]
            text = "\n".join([text, *blocks] if text else blocks)
        if role == "tool":
            role, text = "user", f"<tool_response>\n{text}\n</tool_response>"
        if flat and flat[-1]["role"] == role and role != "system":
            flat[-1] = {"role": role, "content": flat[-1]["content"] + "\n" + text}
        else:
            flat.append({"role": role, "content": text})
    if tools is not None and tools.active:
        instructions = fallback_system_text(tools)
        if flat and flat[0]["role"] == "system":
            flat[0] = {"role": "system", "content": f"{flat[0]['content']}\n\n{instructions}"}
        else:
            flat.insert(0, {"role": "system", "content": instructions})
    return RenderedTools(flat, {})
