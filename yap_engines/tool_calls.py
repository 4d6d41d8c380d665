"""Parse a model's tool calls out of its reply, while it streams: one parser per call format.

A parser is fed the answer text chunk by chunk (`feed`) and closed once (`finish`); each returns a
`CallSplit`: the text that is plain content, the calls completed so far, and how many call blocks
were malformed. Rules every parser keeps, however the reply was chunked (its output concatenates to
the same content and calls):
- text that is not a call streams as content at once, but for a possibly split opening marker;
- a call is held from its first character until it is complete, so it is never half-shown as content;
- a call block that does not parse (bad JSON, an undeclared function, arguments that are not an
  object) is returned as content, whole, and counted in `malformed`;
- whitespace between content and a call, or between calls, is not content.

Built-in formats (no vLLM needed, so the same on every image): `hermes` (`<tool_call>{json}</tool_call>`,
Qwen2.5/3, Hermes, the text fallback), `llama3_json` (a reply that is `{"name", "parameters"}` objects,
optionally after `<|python_tag|>`, Llama 3.1+), `mistral` (`[TOOL_CALLS][{...}]` or `[TOOL_CALLS]name[ARGS]{...}`),
and the two guided forms (`json_array` for `tool_choice: "required"`, `named` for a named function).
Any other name is one of vLLM's tool parsers (`yap_engines.vllm_tool_parsers`), where vLLM is installed.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .thinking import _partial_suffix

BUILTIN_PARSERS = ("hermes", "llama3_json", "mistral")


@dataclass(frozen=True)
class ToolCall:
    """One complete call: `arguments` is a JSON object's text."""

    id: str
    name: str
    arguments: str

    def as_openai(self) -> dict[str, Any]:
        """The call in OpenAI's `message.tool_calls` shape."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class CallSplit:
    """What a parser decided: plain content, complete calls, malformed call blocks (returned as content)."""

    content: str = ""
    calls: tuple[ToolCall, ...] = ()
    malformed: int = 0

    def __add__(self, other: CallSplit) -> CallSplit:
        return CallSplit(self.content + other.content, self.calls + other.calls, self.malformed + other.malformed)


class ToolCallParser(Protocol):
    """A streaming parser of one call format (see the module docstring for its rules)."""

    def feed(self, text: str) -> CallSplit: ...

    def finish(self) -> CallSplit: ...


def make_call(name: Any, arguments: Any, names: Sequence[str]) -> ToolCall | None:
    """A call when `name` is declared and `arguments` is an object (or its JSON text); else None."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments, strict=False)
        except json.JSONDecodeError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(name, str) or name not in names or not isinstance(arguments, dict):
        return None
    return ToolCall(new_call_id(), name, json.dumps(arguments, ensure_ascii=False))


def _call_from_object(obj: Any, names: Sequence[str]) -> ToolCall | None:
    if not isinstance(obj, Mapping):
        return None
    arguments = obj.get("arguments", obj.get("parameters"))
    return make_call(obj.get("name"), arguments, names)


def _objects(text: str) -> list[Any] | None:
    """JSON values in `text`, separated by whitespace, `,` or `;` (None when any part is not JSON)."""
    decoder, at = json.JSONDecoder(strict=False), 0
    found: list[Any] = []
    while True:
        while at < len(text) and text[at] in " \t\r\n;,":
            at += 1
        if at == len(text):
            return found
        try:
            value, at = decoder.raw_decode(text, at)
        except json.JSONDecodeError:
            return None
        found.append(value)


def calls_from_json(text: str, names: Sequence[str]) -> list[ToolCall] | None:
    """Calls from JSON text: one `{"name", "arguments"|"parameters"}` object, several, or arrays of them."""
    values = _objects(text)
    if not values:
        return None
    flat = [item for value in values for item in (value if isinstance(value, list) else [value])]
    calls = [_call_from_object(item, names) for item in flat]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


class _Base:
    """Shared plumbing: trailing whitespace of content is held until content (not a call) follows."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self._held_space = ""
        self.called = False

    def _content(self, text: str) -> str:
        if not text:
            return ""
        body = text.rstrip()
        if not body:
            self._held_space += text
            return ""
        out = self._held_space + body
        self._held_space = text[len(body) :]
        return out

    def _before_call(self) -> None:
        self._held_space = ""

    def _end(self) -> str:
        held, self._held_space = self._held_space, ""
        return "" if self.called else held

    def _block(self, raw: str, body: str) -> CallSplit:
        """A complete call block: its calls, or (malformed) the raw block as content."""
        calls = calls_from_json(body, self.names)
        if calls is None:
            return CallSplit(self._content(raw), (), 1)
        self._before_call()
        self.called = True
        return CallSplit("", tuple(calls))


class MarkerParser(_Base):
    """Calls between an opening and a closing marker (`hermes`: `<tool_call>` … `</tool_call>`)."""

    def __init__(self, names: Sequence[str], open_tag: str = "<tool_call>", close_tag: str = "</tool_call>") -> None:
        super().__init__(names)
        self.open_tag, self.close_tag = open_tag, close_tag
        self._buffer = ""
        self._inside = False

    def feed(self, text: str) -> CallSplit:
        self._buffer += text
        out = CallSplit()
        while True:
            buf = self._buffer
            if not self._inside:
                start = buf.find(self.open_tag)
                if start < 0:
                    keep = _partial_suffix(buf, self.open_tag)
                    self._buffer = buf[len(buf) - keep :]
                    return out + CallSplit(self._content(buf[: len(buf) - keep]))
                out = out + CallSplit(self._content(buf[:start]))
                self._buffer, self._inside = buf[start:], True
                continue
            end = buf.find(self.close_tag)
            if end < 0:
                return out
            end += len(self.close_tag)
            self._buffer, self._inside = buf[end:], False
            out = out + self._block(buf[:end], buf[len(self.open_tag) : end - len(self.close_tag)])

    def finish(self) -> CallSplit:
        buf, self._buffer = self._buffer, ""
        out = CallSplit()
        if self._inside:  # cut off, or a model that ends its turn without the closing marker
            self._inside = False
            out = self._block(buf, buf[len(self.open_tag) :])
        elif buf:
            out = CallSplit(self._content(buf))
        return out + CallSplit(self._end())


class PrefixParser(_Base):
    """A reply that is calls when it starts with one of `starts` (after whitespace): held whole and
    parsed at the end (`llama3_json`). Any other reply streams as content."""

    def __init__(self, names: Sequence[str], starts: Sequence[str], strip: Sequence[str] = ()) -> None:
        super().__init__(names)
        self.starts, self.strip = tuple(starts), tuple(strip)
        self._buffer = ""
        self._mode = "undecided"

    def feed(self, text: str) -> CallSplit:
        if self._mode == "content":
            return CallSplit(self._content(text))
        self._buffer += text
        if self._mode == "calls":
            return CallSplit()
        head = self._buffer.lstrip()
        if any(head.startswith(start) for start in self.starts):
            self._mode = "calls"
            return CallSplit()
        if not head or any(start.startswith(head) for start in self.starts):
            return CallSplit()
        self._mode = "content"
        buf, self._buffer = self._buffer, ""
        return CallSplit(self._content(buf))

    def finish(self) -> CallSplit:
        buf, self._buffer = self._buffer, ""
        out = CallSplit()
        if self._mode == "calls":
            body = buf.strip()
            for prefix in self.strip:
                body = body.removeprefix(prefix)
            out = self._block(buf, body)
        elif buf:
            out = CallSplit(self._content(buf))
        return out + CallSplit(self._end())


class MistralParser(PrefixParser):
    """`[TOOL_CALLS]` then a JSON array of calls, or `name[ARGS]{json}` per call (newer tokenizers). A
    detokenizer that drops the special marker leaves a reply starting with `[{`: read as calls too."""

    MARK = "[TOOL_CALLS]"

    def __init__(self, names: Sequence[str]) -> None:
        super().__init__(names, starts=(self.MARK, "[{"), strip=())

    def _block(self, raw: str, body: str) -> CallSplit:
        parts = [part.strip() for part in body.split(self.MARK) if part.strip()]
        calls: list[ToolCall] = []
        for part in parts:
            if "[ARGS]" in part:
                name, _, args = part.partition("[ARGS]")
                call = make_call(name.strip(), args, self.names)
                found = [call] if call is not None else None
            else:
                found = calls_from_json(part, self.names)
            if not found:
                return CallSplit(self._content(raw), (), 1)
            calls.extend(found)
        if not calls:
            return CallSplit(self._content(raw), (), 1)
        self._before_call()
        self.called = True
        return CallSplit("", tuple(calls))


class GuidedParser(_Base):
    """The reply of guided decoding against the tools' schemas: all of it is the call(s).

    `named` set: the reply is the arguments object of that function. Else the reply is
    `[{"name", "parameters"}, …]` (`tool_choice: "required"`)."""

    def __init__(self, names: Sequence[str], named: str | None = None) -> None:
        super().__init__(names)
        self.named = named
        self._buffer: list[str] = []

    def feed(self, text: str) -> CallSplit:
        self._buffer.append(text)
        return CallSplit()

    def finish(self) -> CallSplit:
        raw = "".join(self._buffer)
        self._buffer.clear()
        if self.named is not None:
            call = make_call(self.named, raw, self.names)
            if call is None:
                return CallSplit(raw, (), 1)
            return CallSplit("", (call,))
        calls = calls_from_json(raw, self.names)
        if calls is None:
            return CallSplit(raw, (), 1)
        return CallSplit("", tuple(calls))


def builtin_parser(name: str, names: Sequence[str]) -> ToolCallParser:
    """A new parser of the built-in format `name` for the declared function `names`."""
    if name == "hermes":
        return MarkerParser(names)
    if name == "llama3_json":
        return PrefixParser(names, starts=("<|python_tag|>", "{"), strip=("<|python_tag|>",))
    if name == "mistral":
        return MistralParser(names)
    raise KeyError(f"no built-in tool-call parser {name!r}; built in: {', '.join(BUILTIN_PARSERS)}")


_TEMPLATE_MARKERS = (("<tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"), ("<|python_tag|>", "llama3_json"))


def template_text(tokenizer: Any) -> str:
    """The tokenizer's chat template source ('' when it has none we can read)."""
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, Mapping):
        template = template.get("tool_use") or template.get("default") or ""
    return template if isinstance(template, str) else ""


def template_renders_tools(tokenizer: Any) -> bool:
    """True when the chat template reads `tools` (so it renders tool definitions and tool messages itself)."""
    text = template_text(tokenizer)
    return "tools" in text and ("tool_calls" in text or "tool_call" in text)


def detect_parser(tokenizer: Any) -> str:
    """The call format the chat template teaches its model (`hermes` when it names none: the text fallback)."""
    text = template_text(tokenizer)
    for marker, name in _TEMPLATE_MARKERS:
        if marker in text:
            return name
    if "ipython" in text and '"parameters"' in text:
        return "llama3_json"
    return "hermes"


class FirstCallOnly:
    """`parallel_tool_calls: false` under `auto`: the first call of a reply is kept, later ones are dropped."""

    def __init__(self, inner: ToolCallParser) -> None:
        self.inner = inner
        self._seen = False

    def _keep(self, split: CallSplit) -> CallSplit:
        calls = () if self._seen else split.calls[:1]
        self._seen = self._seen or bool(calls)
        return CallSplit(split.content, calls, split.malformed)

    def feed(self, text: str) -> CallSplit:
        return self._keep(self.inner.feed(text))

    def finish(self) -> CallSplit:
        return self._keep(self.inner.finish())
