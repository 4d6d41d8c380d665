"""Warms never change a reply: greedy SmolLM2 replies are byte-identical with and without them (real vLLM).

One scripted conversation, run twice on the shared engine with its prefix cache reset before each run:
once with every warm switched off and no `prefill` frames, once with the automatic warms and a `prefill`
per interim transcript, including a revision ("Spa" -> "Italy"), a `prefill` that arrives during a reply,
and a barge-in (`cancel` with `spoken_text`).
"""

from __future__ import annotations

from typing import Any

import pytest
import websockets

from .support import KEY, RecordingEngine, WsTalker
from .test_smollm2_serving import GREEDY, yap_server

pytestmark = [pytest.mark.real_model, pytest.mark.vllm]

PERSONA = "You are a helpful, brief voice assistant. Answer in one short sentence. " * 6


async def converse(talk: WsTalker, warms: bool) -> list[str]:
    """The scripted conversation; the replies of the turns that end by themselves."""

    async def prefill(rid: str, interim: str) -> None:
        if warms:
            await talk.send("prefill", rid, user_utterance=interim)

    replies = []
    await prefill("w1", "What is the capital of")
    replies.append(
        (await talk.turn("t1", "What is the capital of France?", max_tokens=12, **GREEDY))["payload"]["text"]
    )
    await prefill("w2", "And what")
    await prefill("w3", "And what about Spa")  # revised to "Italy" in the final transcript
    replies.append((await talk.turn("t2", "And what about Italy?", max_tokens=12, **GREEDY))["payload"]["text"])
    await talk.send(
        "message", "t3", user_utterance="Tell me a story about a cat.", sampling={"max_tokens": 40, **GREEDY}
    )
    while (await talk.recv())["type"] != "token":
        pass
    await prefill("w4", "Actually, stop")  # during the reply
    await talk.send("cancel", "t3", spoken_text="Once upon a time")
    await talk.until_terminal("t3")
    replies.append((await talk.turn("t4", "What is two plus two?", max_tokens=12, **GREEDY))["payload"]["text"])
    return replies


async def test_greedy_replies_are_byte_identical_with_and_without_warms(smollm2_engine: Any) -> None:
    runs = {}
    for warms in (False, True):
        await smollm2_engine.reset_prefix_cache()
        engine = RecordingEngine(smollm2_engine)
        switches = {"ws_warm_after_start": warms, "ws_warm_after_turn": warms}
        async with yap_server(engine, **switches) as port:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws?api_key={KEY}") as connection:
                talk = WsTalker(connection)
                await talk.start(PERSONA)
                runs[warms] = await converse(talk, warms)
        prompts = [list(r.prompt_token_ids) for r in engine.requests]
        runs[(warms, "prompts")] = prompts
    assert all(runs[False]) and runs[True] == runs[False]
    assert runs[(True, "prompts")] == runs[(False, "prompts")]  # the same prompts, whatever was cached
    assert smollm2_engine.num_unfinished_requests() == 0
