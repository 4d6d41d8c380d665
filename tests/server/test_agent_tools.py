"""Voice-agent frameworks run whole function-calling turns against Yap, unchanged: LiveKit Agents'
OpenAI plugin (`livekit.plugins.openai.LLM` in an `AgentSession`, text only) and Pipecat's
`OpenAILLMService` on `/v1/chat/completions`. The model (a fake engine with scripted replies in the
hermes format) calls the tool, the framework runs it and sends the result back, the model answers."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from yap_cli.loopback import serve_on_loopback

from .conftest import KEY, RecordingFake, app_for

CALL = '<tool_call>\n{"name": "lookup_weather", "arguments": {"location": "Paris"}}\n</tool_call>'
ANSWER = "It is sunny and 24 degrees in Paris."


async def test_livekit_agents_openai_plugin_runs_a_function_calling_turn() -> None:
    pytest.importorskip("livekit.plugins.openai", reason="LiveKit Agents is a test dependency: livekit-agents[openai]")
    from livekit.agents import Agent, AgentSession, function_tool
    from livekit.plugins import openai as lk_openai

    ran: list[str] = []

    class Assistant(Agent):
        def __init__(self) -> None:
            super().__init__(instructions="You are a brief voice assistant.")

        @function_tool
        async def lookup_weather(self, location: str) -> str:
            """Look up the current weather in a location."""
            ran.append(location)
            return "sunny, 24 degrees"

    engine = RecordingFake(script=[CALL, ANSWER], model_id="m")
    async with serve_on_loopback(app_for({"chat": engine})) as port:
        llm = lk_openai.LLM(model="m", base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        async with AgentSession(llm=llm) as session:
            await session.start(Assistant())
            result = await session.run(user_input="What's the weather in Paris?")
    result.expect.next_event().is_function_call(name="lookup_weather", arguments={"location": "Paris"})
    result.expect.next_event().is_function_call_output(output="sunny, 24 degrees")
    result.expect.next_event().is_message(role="assistant")
    result.expect.no_more_events()
    assert ran == ["Paris"]
    assert [e.item.content for e in result.events if e.type == "message"] == [[ANSWER]]
    # the second request carried the call and its result, rendered for the template (the text fallback)
    second = engine.requests[1].messages
    assert any("<tool_response>\nsunny, 24 degrees\n</tool_response>" in m["content"] for m in second)
    assert any('"name": "lookup_weather"' in m["content"] for m in second if m["role"] == "assistant")


class Collector:
    """The end of a Pipecat pipeline: records the text the LLM streamed, and sees each response end."""

    @staticmethod
    def build(ended: asyncio.Event, texts: list[str], responses: int) -> Any:
        from pipecat.frames.frames import LLMFullResponseEndFrame, LLMTextFrame
        from pipecat.processors.frame_processor import FrameProcessor

        class _Collector(FrameProcessor):
            seen = 0

            async def process_frame(self, frame: Any, direction: Any) -> None:
                await super().process_frame(frame, direction)
                if isinstance(frame, LLMTextFrame):
                    texts.append(frame.text)
                if isinstance(frame, LLMFullResponseEndFrame):
                    self.seen += 1
                    if self.seen == responses:
                        ended.set()
                await self.push_frame(frame, direction)

        return _Collector()


async def run_until(pipeline: Any, frame: Any, ended: asyncio.Event) -> None:
    """Run `pipeline`, send `frame`, and end it once `ended` is set (bounded)."""
    from pipecat.frames.frames import EndFrame
    from pipecat.pipeline.worker import PipelineWorker
    from pipecat.workers.runner import WorkerRunner

    worker = PipelineWorker(pipeline, cancel_on_idle_timeout=False)
    started = asyncio.Event()

    @worker.event_handler("on_pipeline_started")
    async def _started(worker: Any, frame: Any) -> None:
        started.set()

    async def drive() -> None:
        await asyncio.wait_for(started.wait(), 30)
        await worker.queue_frame(frame)
        try:
            await asyncio.wait_for(ended.wait(), 60)
        finally:
            await worker.queue_frame(EndFrame())

    runner = WorkerRunner()
    await runner.add_workers(worker)
    await asyncio.gather(runner.run(), drive())


async def pipecat_weather_turn(service: Callable[[int], Any]) -> RecordingFake:
    """One Pipecat pipeline (user aggregator, `service(port)` against a Yap server, a collector, assistant
    aggregator) asked for Paris's weather with a client tool: the call runs, its result goes back, and the
    second reply is the answer. Returns the engine, which recorded both requests."""
    from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
    from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
    from pipecat.frames.frames import LLMContextFrame
    from pipecat.pipeline.pipeline import Pipeline
    from pipecat.processors.aggregators.llm_context import LLMContext
    from pipecat.processors.aggregators.llm_response_universal import LLMContextAggregatorPair
    from pipecat.services.llm_service import FunctionCallParams

    engine = RecordingFake(script=[CALL, ANSWER], model_id="m")
    ran: list[dict[str, Any]] = []
    texts: list[str] = []
    ended = asyncio.Event()
    async with serve_on_loopback(app_for({"chat": engine})) as port:
        llm = service(port)

        async def lookup_weather(params: FunctionCallParams) -> None:
            ran.append(dict(params.arguments))
            await params.result_callback({"conditions": "sunny", "temperature": 24})

        llm.register_function("lookup_weather", lookup_weather)
        weather = FunctionSchema(
            name="lookup_weather",
            description="Look up the current weather",
            properties={"location": {"type": "string"}},
            required=["location"],
        )
        context = LLMContext(
            [{"role": "user", "content": "What's the weather in Paris?"}], tools=ToolsSchema(standard_tools=[weather])
        )
        aggregators = LLMContextAggregatorPair(context)
        collector = Collector.build(ended, texts, responses=2)
        pipeline = Pipeline([aggregators.user(), llm, collector, aggregators.assistant()])
        await run_until(pipeline, LLMContextFrame(context), ended)
    assert ran == [{"location": "Paris"}]
    assert "".join(texts) == ANSWER
    return engine


async def test_pipecat_openai_llm_service_runs_a_function_calling_turn() -> None:
    pytest.importorskip("pipecat", reason="Pipecat is a test dependency: pip install 'pipecat-ai[openai]'")
    from pipecat.services.openai.llm import OpenAILLMService

    engine = await pipecat_weather_turn(
        lambda port: OpenAILLMService(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, settings=OpenAILLMService.Settings(model="m")
        )
    )
    second = engine.requests[1].messages
    result = json.dumps({"conditions": "sunny", "temperature": 24})
    assert any(f"<tool_response>\n{result}\n</tool_response>" in m["content"] for m in second)


async def test_pipecat_responses_service_runs_a_function_calling_turn_with_a_client_tool() -> None:
    pytest.importorskip("pipecat", reason="Pipecat is a test dependency: pip install 'pipecat-ai[openai]'")
    from pipecat.services.openai.responses.llm import OpenAIResponsesLLMService

    engine = await pipecat_weather_turn(
        lambda port: OpenAIResponsesLLMService(
            api_key=KEY,
            ws_url=f"ws://127.0.0.1:{port}/v1/responses",
            settings=OpenAIResponsesLLMService.Settings(model="m"),
        )
    )
    second = engine.requests[1].messages  # the call and its output, rendered back (the text fallback)
    assert any('"name": "lookup_weather"' in m["content"] for m in second if m["role"] == "assistant")
    assert any("<tool_response>" in m["content"] and "sunny" in m["content"] for m in second)
