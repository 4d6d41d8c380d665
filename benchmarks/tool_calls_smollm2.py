"""Guided tool calls on the embedded default (SmolLM2-135M-Instruct, vLLM): do they parse and validate?

50 varied user lines, 3 tools, `tool_choice: "required"`, temperature 0, through `/v1/chat/completions`
of a real server on 127.0.0.1 with the OpenAI SDK. For each reply: the call parses, names a declared
tool, and its arguments validate against that tool's JSON Schema; which tool was picked is compared
with the obvious one. The first `--identical N` lines also run streamed, and the streamed calls must
equal the whole ones. Prints one JSON line.

    .venv/bin/python benchmarks/tool_calls_smollm2.py [MODEL_DIR] [--identical N]
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import openai

from yap_cli.loopback import serve_on_loopback
from yap_engines import load_engine
from yap_engines.settings import EngineSettings
from yap_server.app import create_app
from yap_server.settings import ServerSettings

KEY = "bench-key"
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "the city name"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city", "unit"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_table",
            "description": "Book a table at a restaurant.",
            "parameters": {
                "type": "object",
                "properties": {
                    "restaurant": {"type": "string"},
                    "people": {"type": "integer", "minimum": 1, "maximum": 20},
                    "time": {"type": "string", "description": "HH:MM, 24-hour"},
                },
                "required": ["restaurant", "people", "time"],
                "additionalProperties": False,
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "end_call",
            "description": "Hang up the phone call when the user says goodbye or wants to stop.",
            "parameters": {
                "type": "object",
                "properties": {"reason": {"type": "string", "enum": ["goodbye", "user_request", "other"]}},
                "required": ["reason"],
                "additionalProperties": False,
            },
        },
    },
]
PROMPTS: list[tuple[str, str]] = [
    *(
        (line, "get_weather")
        for line in (
            "What's the weather like in Paris?",
            "Is it raining in London right now?",
            "How hot is it in Cairo today, in fahrenheit?",
            "Tell me the temperature in Tokyo.",
            "Do I need an umbrella in Seattle?",
            "What's the forecast for Berlin?",
            "Is it sunny in Madrid?",
            "How cold is it in Oslo in celsius?",
            "Weather in New York please.",
            "Is it windy in Chicago today?",
            "What's the weather in Sydney?",
            "Should I wear a coat in Toronto today?",
            "Check the weather in Rome for me.",
            "How warm is it in Lisbon?",
            "Is it snowing in Moscow?",
            "What's it like outside in Dublin?",
            "Give me the current temperature in Mumbai.",
        )
    ),
    *(
        (line, "book_table")
        for line in (
            "Book a table for two at Luigi's at 7pm.",
            "Reserve a table for four at The Oak at 19:30.",
            "Can you get me a dinner reservation for 6 people at Sakura at 8 pm?",
            "I'd like to book Chez Marie for three at 12:30.",
            "Table for one at Blue Door at 18:00, please.",
            "Make a reservation at Golden Dragon for 5 at 20:15.",
            "Please book a table at Nando's for two people tonight at 9.",
            "Reserve dinner for eight at the Harbour Grill at 7:45 pm.",
            "Get us a table at Pizza Roma for 3 at noon.",
            "Book lunch at Green Leaf for two at 13:00.",
            "We need a table for 10 at Steakhouse 55 at 19:00.",
            "Can I reserve a spot for two at Café Nero at 10am?",
            "Book a table at Spice Route for four people at 8:30 pm.",
            "Reserve a table for 2 at La Piazza at 21:00.",
            "I want to eat at Sushi Zen with 3 friends at 7pm, book it.",
            "Book a table for six at Olive Garden at 6:30 pm.",
            "Make a booking at The Ivy for two at 20:00.",
        )
    ),
    *(
        (line, "end_call")
        for line in (
            "Goodbye!",
            "Thanks, that's all, bye.",
            "Please hang up now.",
            "I'm done, end the call.",
            "Okay, talk to you later, bye bye.",
            "Stop the call please.",
            "That's everything, goodbye.",
            "You can hang up.",
            "Bye for now.",
            "End this conversation.",
            "I have to go, goodbye.",
            "Thank you, have a nice day, bye.",
            "Cancel the call, I'm finished.",
            "See you, bye.",
            "Hang up the phone.",
            "Alright, that's it, goodbye!",
        )
    ),
]
SYSTEM = "You are a phone assistant. Call the right function for the user's request."


def check(calls: list[Any]) -> tuple[bool, str | None]:
    """Every call parses, names a declared tool and validates; returns (ok, first tool's name)."""
    schemas = {tool["function"]["name"]: tool["function"]["parameters"] for tool in TOOLS}
    if not calls:
        return False, None
    for call in calls:
        if call.function.name not in schemas:
            return False, call.function.name
        try:
            jsonschema.validate(json.loads(call.function.arguments), schemas[call.function.name])
        except (json.JSONDecodeError, jsonschema.ValidationError):
            return False, call.function.name
    return True, calls[0].function.name


def required_call(model: str, line: str) -> dict[str, Any]:
    """The chat-completions arguments of one prompt: every tool offered, one call required, greedy."""
    return {
        "model": model,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": line}],
        "tools": TOOLS,
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "temperature": 0,
        "max_tokens": 96,
    }


async def streamed_calls(client: openai.AsyncOpenAI, **kwargs: Any) -> list[tuple[str, str]]:
    calls: list[list[str]] = []
    async for chunk in await client.chat.completions.create(stream=True, **kwargs):
        for call in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            if call.index == len(calls):
                calls.append([call.function.name or "", ""])
            calls[call.index][1] += call.function.arguments or ""
    return [(name, arguments) for name, arguments in calls]


async def main(model_dir: str, identical: int) -> dict[str, Any]:
    engine = load_engine("vllm", model=model_dir, vllm_max_num_seqs=4)
    settings = ServerSettings(text_api_key=KEY, max_concurrent_connections=8, deploy_mode="chat")
    app = create_app(settings, engines={"chat": engine}, engine_settings=EngineSettings())
    results, picked, latencies, mismatched = [], Counter(), [], 0
    try:
        async with serve_on_loopback(app) as port:
            client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0, timeout=900)
            model = (await client.models.list()).data[0].id
            for index, (line, expected) in enumerate(PROMPTS):
                kwargs = required_call(model, line)
                started = time.perf_counter()
                reply = await client.chat.completions.create(**kwargs)
                latencies.append(time.perf_counter() - started)
                calls = reply.choices[0].message.tool_calls or []
                ok, name = check(calls)
                picked[(expected, name)] += 1
                results.append({"line": line, "expected": expected, "picked": name, "valid": ok})
                print(json.dumps({"progress": index, **results[-1]}), file=sys.stderr, flush=True)
                if index < identical:
                    whole = [(c.function.name, c.function.arguments) for c in calls]
                    mismatched += whole != await streamed_calls(client, **kwargs)
    finally:
        await engine.aclose()
    valid = sum(r["valid"] for r in results)
    right = sum(r["picked"] == r["expected"] for r in results)
    return {
        "model": Path(model_dir).name,
        "prompts": len(results),
        "tools": len(TOOLS),
        "parsed_and_valid": valid,
        "parsed_and_valid_pct": round(100 * valid / len(results), 1),
        "picked_obvious_tool": right,
        "picked_obvious_tool_pct": round(100 * right / len(results), 1),
        "picks": {f"{expected}->{name}": count for (expected, name), count in sorted(picked.items(), key=str)},
        "streamed_vs_whole_compared": min(identical, len(results)),
        "streamed_vs_whole_mismatched": mismatched,
        "median_reply_s": round(sorted(latencies)[len(latencies) // 2], 3),
        "wrong_picks": [r for r in results if r["picked"] != r["expected"]],
    }


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--identical")]
    compare = next((int(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--identical=")), 10)
    directory = args[0] if args else str(EngineSettings(engines_dir=Path("engines")).default_model_dir)
    print(json.dumps(asyncio.run(main(directory, compare))))
