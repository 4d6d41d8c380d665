"""vLLM's tool parsers (`vllm.tool_parsers`), reused for every call format Yap does not build in.

`TOOL_CALL_PARSER=<name>` names any parser in vLLM's registry (`pythonic`, `granite`, `jamba`,
`kimi_k2`, …; `vllm:hermes` picks vLLM's own hermes over the built-in one). vLLM is imported only
here, lazily. Such a parser reads the whole reply: Yap holds the reply until the end and returns
vLLM's content and calls then (vLLM's streaming parsers need vLLM's own serving state), so with
these formats the content of a reply that calls a tool arrives in one piece at the end. On an image
without vLLM (TensorRT-LLM) only the built-in formats parse; naming another fails at startup.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .errors import BackendUnavailableError
from .tool_calls import CallSplit, make_call


def vllm_parser_names() -> list[str]:
    """The names in vLLM's tool-parser registry (raises `BackendUnavailableError` without vLLM)."""
    try:
        from vllm.tool_parsers import ToolParserManager
    except ImportError as exc:
        raise BackendUnavailableError(
            "vLLM is not installed, so only the built-in tool-call parsers (hermes, llama3_json, mistral) are "
            'available: install "yap[vllm]" or use one of those'
        ) from exc
    return list(ToolParserManager.list_registered())


class VllmToolParser:
    """One of vLLM's parsers in whole-reply mode (see the module docstring)."""

    def __init__(self, name: str, tokenizer: Any, openai_tools: Sequence[dict[str, Any]], names: Sequence[str]) -> None:
        """`openai_tools`: the declared tools in OpenAI's shape; `names`: their names (a call of another is none)."""
        try:
            from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
            from vllm.tool_parsers import ToolParserManager
        except ImportError as exc:
            raise BackendUnavailableError(f"the tool-call parser {name!r} is vLLM's and vLLM is not installed") from exc
        self.names = tuple(names)
        self._request = ChatCompletionRequest.model_validate(
            {"model": "yap", "messages": [{"role": "user", "content": ""}], "tools": list(openai_tools)}
        )
        parser_class = ToolParserManager.get_tool_parser(name)
        self._parser = parser_class(tokenizer, list(self._request.tools or ()))
        self._buffer: list[str] = []

    def feed(self, text: str) -> CallSplit:
        self._buffer.append(text)
        return CallSplit()

    def finish(self) -> CallSplit:
        text = "".join(self._buffer)
        self._buffer.clear()
        info = self._parser.extract_tool_calls(text, self._request)
        if not info.tools_called:
            return CallSplit(text)
        calls = [make_call(call.function.name, call.function.arguments, self.names) for call in info.tool_calls]
        if not calls or any(call is None for call in calls):
            return CallSplit(text, (), 1)
        return CallSplit((info.content or "").strip(), tuple(call for call in calls if call is not None))
