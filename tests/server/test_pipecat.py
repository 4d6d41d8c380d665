"""Pipecat's own default LLM service (`OpenAIResponsesLLMService`, unmodified) against Yap's `/v1/responses`.

A pipeline of Pipecat's context aggregators around the service is driven by Pipecat's `run_test`
through a conversation: a greeting, a tool call (the classifier's decision, answered by a Pipecat
function handler), a reply interrupted mid-stream, and a last turn. The test checks the text
frames the service emitted against what Yap streamed, and the requests Yap received: full context
first, then only the new items chained by `previous_response_id`, the interrupted reply replaced
by the part the pipeline kept. Run with the fake engine and with the demo model on vLLM (CPU).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import pytest

pytest.importorskip("pipecat", reason="Pipecat is a test dependency: pip install 'pipecat-ai[openai]'")

from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    DataFrame,
    Frame,
    InterruptionFrame,
    LLMFullResponseStartFrame,
    LLMMessagesAppendFrame,
    LLMTextFrame,
    LLMUpdateSettingsFrame,
)
from pipecat.observers.base_observer import BaseObserver, FramePushed
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.llm_service import FunctionCallParams
from pipecat.services.openai.responses.llm import OpenAIResponsesLLMService
from pipecat.tests.utils import run_test

from yap_cli.loopback import serve_on_loopback
from yap_engines import ChatRequest, FunctionEngine
from yap_server.responses.events import FunctionCallOutputInput, MessageInput, ResponseCreate
from yap_server.responses.route import ResponsesRoute
from yap_server.responses.run import ResponseRun

from .conftest import KEY, app_for
from .test_responses_ws import KeywordClassifier

SYSTEM = "You are a brief voice assistant."
GREETING = "what's the capital of France?"
LOOK = "can you look at my screen?"
SONG = "sing me a song"
LAST = "I saw a movie last night"
SCREEN = "a spreadsheet of quarterly sales"


@dataclass
class Conversation:
    """What the pipeline saw (text per LLM response, tool calls) and what Yap received and answered."""

    texts: list[str] = field(default_factory=list)
    responses_ended: int = 0
    text_seen: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    creates: list[ResponseCreate] = field(default_factory=list)
    runs: list[ResponseRun] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


class Watcher(BaseObserver):
    """Records the text frames the LLM service emits, per response."""

    def __init__(self, llm: FrameProcessor, seen: Conversation) -> None:
        super().__init__()
        self.llm, self.seen = llm, seen

    async def on_push_frame(self, data: FramePushed) -> None:
        frame, seen = data.frame, self.seen
        if data.source is self.llm and isinstance(frame, LLMFullResponseStartFrame):
            seen.texts.append("")
        elif data.source is self.llm and isinstance(frame, LLMTextFrame):
            seen.texts[-1] += frame.text
            seen.text_seen.set()


@dataclass
class AwaitResponses(DataFrame):
    """Script step: hold the next frames until `count` LLM responses have ended."""

    count: int = 0


@dataclass
class InterruptOnText(DataFrame):
    """Script step: interrupt the pipeline as soon as the running response streams text."""


class Gate(FrameProcessor):
    """Runs the script steps in order (a user turn waits for the previous reply, as a person would)."""

    def __init__(self, seen: Conversation) -> None:
        super().__init__()
        self.seen = seen

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, AwaitResponses):
            while self.seen.responses_ended < frame.count:
                self.seen.changed.clear()
                await asyncio.wait_for(self.seen.changed.wait(), 30)
        elif isinstance(frame, InterruptOnText):
            self.seen.text_seen.clear()
            await asyncio.wait_for(self.seen.text_seen.wait(), 30)
            await self.push_frame(InterruptionFrame())
        else:
            await self.push_frame(frame, direction)


def recording(monkeypatch: pytest.MonkeyPatch, seen: Conversation) -> None:
    """Record every `response.create` Yap accepts and the response it runs."""
    prepare = ResponsesRoute.prepare

    def recorded(self: ResponsesRoute, event: ResponseCreate) -> ResponseRun:
        seen.creates.append(event)
        run = prepare(self, event)
        seen.runs.append(run)
        return run

    monkeypatch.setattr(ResponsesRoute, "prepare", recorded)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


async def converse(engines: dict[str, Any], seen: Conversation, long_reply: dict[str, Any], **settings: Any) -> None:
    """Serve Yap with `engines` and run the scripted conversation through Pipecat's service."""
    app = app_for(engines, deploy_mode="both", **settings)

    async with serve_on_loopback(app) as port:
        llm = OpenAIResponsesLLMService(
            api_key=KEY,
            ws_url=f"ws://127.0.0.1:{port}/v1/responses",
            settings=OpenAIResponsesLLMService.Settings(
                model="yap-demo",
                system_instruction=SYSTEM,
                extra={"seed": 7},  # seeded: replies repeat run to run
            ),
        )

        async def take_screenshot(params: FunctionCallParams) -> None:
            seen.tool_calls.append(dict(params.arguments))
            await params.result_callback(SCREEN)

        llm.register_function("take_screenshot", take_screenshot)
        schema = FunctionSchema(name="take_screenshot", description="Look at the screen", properties={}, required=[])
        context = LLMContext(tools=ToolsSchema(standard_tools=[schema]))
        pair = LLMContextAggregatorPair(context)

        @pair.assistant().event_handler("on_assistant_turn_stopped")
        async def turn_stopped(aggregator: Any, message: Any) -> None:
            seen.responses_ended += 1  # the reply (or what was kept of it) is in the context now
            seen.changed.set()

        pipeline = Pipeline([Gate(seen), pair.user(), llm, pair.assistant()])
        script = [
            LLMMessagesAppendFrame([user(GREETING)], run_llm=True),
            AwaitResponses(1),
            LLMMessagesAppendFrame([user(LOOK)], run_llm=True),
            AwaitResponses(3),  # the call, then the answer that reads its result
            LLMUpdateSettingsFrame(delta=OpenAIResponsesLLMService.Settings(extra=long_reply)),
            LLMMessagesAppendFrame([user(SONG)], run_llm=True),
            InterruptOnText(),
            AwaitResponses(4),
            LLMUpdateSettingsFrame(delta=OpenAIResponsesLLMService.Settings(extra={"logit_bias": None})),
            LLMMessagesAppendFrame([user(LAST)], run_llm=True),
            AwaitResponses(5),
        ]
        await run_test(pipeline, frames_to_send=script, observers=[Watcher(llm, seen)])


def check_conversation(seen: Conversation, chat: Any) -> None:
    """The assertions shared by the fake-engine and the vLLM runs."""
    runs, creates = seen.runs, seen.creates
    assert len(creates) == 5, [c.previous_response_id for c in creates]
    statuses = [run.response.status for run in runs]
    assert statuses == ["completed", "completed", "completed", "incomplete", "completed"], statuses
    assert runs[3].response.incomplete_details is not None
    assert runs[3].response.incomplete_details.reason == "cancelled"
    assert chat.num_unfinished_requests() == 0

    def said(run: ResponseRun) -> str:
        return "".join(p.text for item in run.response.output if item.type == "message" for p in item.content)

    # Pipecat emitted exactly what Yap streamed, response by response (the interrupted one: a prefix of it).
    assert len(seen.texts) == 5
    for index in (0, 2, 4):
        assert seen.texts[index] == said(runs[index]), index
    assert seen.texts[0].strip() and seen.texts[2].strip()  # a reply the next request can chain on
    assert seen.texts[1] == "" and runs[1].response.output[0].type == "function_call"
    spoken = seen.texts[3]
    assert spoken and said(runs[3]).startswith(spoken)
    assert seen.tool_calls == [{}]

    # What Yap received: the whole context once, then only new items chained to the last finished response.
    first = creates[0]
    assert first.previous_response_id is None and first.instructions == SYSTEM
    assert [(i.role, i.text) for i in first.items() if isinstance(i, MessageInput)] == [("user", GREETING)]
    assert creates[1].previous_response_id == runs[0].response_id
    assert [i.text for i in creates[1].items() if isinstance(i, MessageInput)] == [LOOK]
    assert creates[2].previous_response_id == runs[1].response_id
    [result] = creates[2].items()
    call = runs[1].response.output[0]
    assert isinstance(result, FunctionCallOutputInput) and result.call_id == call.call_id  # type: ignore[union-attr]
    assert SCREEN in result.text
    assert creates[3].previous_response_id == runs[2].response_id
    assert [i.text for i in creates[3].items() if isinstance(i, MessageInput)] == [SONG]
    # The cut reply is not in the chain (it never completed); what the pipeline kept of it comes as input.
    assert creates[4].previous_response_id == runs[2].response_id
    chained = [(i.role, i.text) for i in creates[4].items() if isinstance(i, MessageInput)]
    assert chained == [("user", SONG), ("assistant", spoken), ("user", LAST)]
    whole = runs[4].conversation
    kinds = [item.role if isinstance(item, MessageInput) else item.type for item in whole]
    assert kinds == [
        "user",
        "assistant",
        "user",
        "function_call",
        "function_call_output",
        "assistant",
        "user",
        "assistant",
        "user",
    ]
    assert whole[7].text == spoken  # type: ignore[union-attr]


class ScriptedChat:
    """Replies by the newest user line of the prompt; the song is long and slow enough to interrupt."""

    REPLIES: ClassVar[dict[str, str]] = {
        GREETING: "Paris is the capital of France.",
        SCREEN: "I can see a spreadsheet with your quarterly sales.",
        SONG: " ".join(["ha"] * 400),
        LAST: "Oh nice, which one did you see?",
    }

    def __init__(self) -> None:
        self.engine = FunctionEngine(self)

    def __call__(self, request: ChatRequest) -> AsyncIterator[str]:
        prompt = self.engine.tokenizer.decode(request.prompt_token_ids)
        newest = max(self.REPLIES, key=prompt.rfind)
        return self._say(self.REPLIES[newest], slow=newest == SONG)

    @staticmethod
    async def _say(text: str, slow: bool) -> AsyncIterator[str]:
        for word in text.split(" "):
            await asyncio.sleep(0.02 if slow else 0)
            yield word + " "


async def test_pipecat_converses_with_yap_on_the_fake_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    seen = Conversation()
    recording(monkeypatch, seen)
    chat = ScriptedChat()
    classifier = KeywordClassifier()
    await converse({"chat": chat.engine, "tool": classifier}, seen, long_reply={})
    check_conversation(seen, chat.engine)
    assert seen.texts[0] == ScriptedChat.REPLIES[GREETING]
    assert seen.texts[2] == ScriptedChat.REPLIES[SCREEN]
    assert seen.texts[4] == ScriptedChat.REPLIES[LAST]
    assert [utterance for _, utterance in classifier.calls] == [GREETING, LOOK, SONG, LAST]


@pytest.fixture(scope="module")
async def demo_classifier(demo_model_dir: Path) -> AsyncIterator[Any]:
    from yap_engines.demo import DEMO_TOOL_NAME, build_demo_tool
    from yap_engines.tool import ToolClassifier, ToolSettings

    tool = ToolClassifier.load(
        str(build_demo_tool(demo_model_dir.parent / DEMO_TOOL_NAME)), ToolSettings(tool_device="cpu")
    )
    yield tool
    await tool.aclose()


@pytest.mark.vllm
async def test_pipecat_converses_with_yap_on_the_demo_model(
    monkeypatch: pytest.MonkeyPatch, vllm_engine: Any, demo_classifier: Any
) -> None:
    seen = Conversation()
    recording(monkeypatch, seen)
    banned = {str(token): -100 for token in vllm_engine.tokenizer.all_special_ids}  # no end: a long reply
    await converse({"chat": vllm_engine, "tool": demo_classifier}, seen, {"logit_bias": banned}, chat_max_out=2000)
    check_conversation(seen, vllm_engine)
