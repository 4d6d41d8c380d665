"""`POST /embeddings` with the packaged all-MiniLM-L6-v2 (real SDK and httpx), `/dashboard`, `/health`, on loopback."""

from __future__ import annotations

import math
from typing import Any

import httpx
import pytest

from yap_cli.client_completions import completions_url, job_frame, run_job
from yap_cli.loopback import serve_on_loopback
from yap_engines import FakeEngine
from yap_server.app import create_app

from .conftest import KEY, server_settings

CHOICE = {"type": "choice", "choices": ["yes", "no"]}


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


async def test_embeddings_through_the_openai_sdk_are_unit_vectors_that_mean_something() -> None:
    openai = pytest.importorskip("openai")
    app = create_app(server_settings(), engines={"chat": FakeEngine()})
    async with serve_on_loopback(app) as port:
        client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY)
        texts = ["A cat sits on the mat.", "A kitten is sitting on a rug.", "Quarterly bond yields rose sharply."]
        reply = await client.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # base64 on the wire
        await client.close()

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            single = await http.post("/embeddings", json={"input": texts[0]}, headers={"X-API-Key": KEY})
            anonymous = await http.post("/embeddings", json={"input": "hi"})
            wrong_model = await http.post(
                "/embeddings", json={"input": "hi", "model": "gpt"}, headers={"X-API-Key": KEY}
            )
            empty = await http.post("/embeddings", json={"input": []}, headers={"X-API-Key": KEY})

    vectors = [item.embedding for item in reply.data]
    assert [item.index for item in reply.data] == [0, 1, 2]
    assert all(len(v) == 384 and math.isclose(math.sqrt(cosine(v, v)), 1.0, abs_tol=1e-4) for v in vectors)
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert reply.usage.prompt_tokens > len(texts)
    body = single.json()
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"
    assert max(abs(a - b) for a, b in zip(body["data"][0]["embedding"], vectors[0], strict=True)) < 1e-5
    assert anonymous.status_code == 401
    assert wrong_model.status_code == 404 and wrong_model.json()["error"]["code"] == "model_not_found"
    assert empty.status_code == 400 and "input" in empty.json()["error"]["message"]


async def test_the_encoder_is_loaded_by_the_lifespan_not_by_the_first_request() -> None:
    import asyncio

    app = create_app(server_settings(embed_preload=True), engines={"chat": FakeEngine()})
    async with serve_on_loopback(app) as port:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            for _ in range(600):  # loading torch and MiniLM takes seconds on a busy CPU
                status = await http.get("/status", headers={"X-API-Key": KEY})
                if status.json().get("embeddings_loaded"):
                    break
                await asyncio.sleep(0.1)
            assert status.json()["embeddings_loaded"] is True  # no /embeddings request was made
            reply = await http.post("/embeddings", json={"input": "hi"}, headers={"X-API-Key": KEY})
            assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) == 384


async def test_without_preload_nothing_loads_until_the_first_request() -> None:
    app = create_app(server_settings(embed_preload=False), engines={"chat": FakeEngine()})
    async with serve_on_loopback(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        status = await http.get("/status", headers={"X-API-Key": KEY})
        assert status.json()["embeddings_loaded"] is False


async def test_the_dashboard_page_is_public_and_its_stats_need_the_key() -> None:
    engine = FakeEngine()
    app = create_app(server_settings(final_max_tokens=16, thinking_budget_low=4), engines={"chat": engine})
    async with serve_on_loopback(app) as port, httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
        origin = f"http://127.0.0.1:{port}"
        for rid in ("one", "two"):
            frame = job_frame([{"role": "user", "content": "Sunny?"}], "low", CHOICE, client_request_id=rid)
            assert (await run_job(completions_url(origin, KEY), frame, None, 20))["status"] == "completed"
        page = await http.get("/dashboard")
        refused = await http.get("/dashboard/stats")
        stats: dict[str, Any] = (await http.get("/dashboard/stats", params={"api_key": KEY})).json()
        ready = await http.get("/health")
        engine.kill("test")
        not_ready = await http.get("/health")

    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'src="dashboard/app.js"' in page.text and "api_key" not in page.text
    assert "default-src 'none'" in page.headers["content-security-policy"]
    assert refused.status_code == 401
    jobs = stats["jobs"]
    assert (jobs["running"], jobs["queued"], jobs["statuses"]) == (0, 0, {"completed": 2})
    assert jobs["latency_s"]["p50"] is not None and jobs["latency_s"]["p50"] <= jobs["latency_s"]["p99"]
    assert jobs["jobs_per_s"] == pytest.approx(2 / 60) and jobs["tokens_per_s"] > 0
    assert stats["engines"]["chat"]["ok"] is True
    assert ready.json() == {"status": "ready"}
    assert not_ready.status_code == 503 and "test" in not_ready.json()["failing"]["chat"]
