"""In-process data parallel (`YAP_VLLM_DATA_PARALLEL_SIZE`): vLLM gets `data_parallel_size`, and each
session is pinned to one rank through `AsyncLLM.generate(..., data_parallel_rank=)`.

The balancing is checked against a stand-in `AsyncLLM` that records the keyword vLLM receives (40
sessions, fast); the engine arguments are vLLM's real ones, validated by vLLM's CPU build; and one test
starts real vLLM (CPU build) with two ranks on the demo model and shows each session's turns reach the
prefix cache of its own rank only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from yap_engines import ChatRequest, EngineSettings, Sampling, Usage, load_engine


class StandInAsyncLLM:
    """Records each `generate` call's `data_parallel_rank` and finishes at once."""

    def __init__(self) -> None:
        self.ranks: list[int | None] = []

    async def generate(self, prompt: Any, params: Any, request_id: str, **kw: Any) -> AsyncIterator[Any]:
        self.ranks.append(kw.get("data_parallel_rank"))
        choice = SimpleNamespace(text="ok", token_ids=[7], finish_reason="stop")
        yield SimpleNamespace(
            outputs=[choice], finished=True, prompt_token_ids=prompt["prompt_token_ids"], num_cached_tokens=0
        )


@pytest.fixture
def vllm_adapter() -> Any:
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    from yap_engines.adapters import vllm

    return vllm


async def test_each_session_is_pinned_to_one_rank_and_sessions_spread(vllm_adapter: Any) -> None:
    llm = StandInAsyncLLM()
    engine = vllm_adapter.VllmEngine(llm, model_id="m", data_parallel_size=4)
    sessions = [f"s{i}" for i in range(40)]
    for turn in range(3):
        for session in sessions:
            request = ChatRequest(f"{session}-{turn}", [1, 2, 3], Sampling(max_tokens=2), session_id=session)
            assert [d.text async for d in engine.generate(request)] == ["ok"]
    by_session = {s: {llm.ranks[t * 40 + i] for t in range(3)} for i, s in enumerate(sessions)}
    assert all(len(ranks) == 1 for ranks in by_session.values())  # every turn of a session on one rank
    counts = [sum(1 for ranks in by_session.values() if ranks == {r}) for r in range(4)]
    assert max(counts) <= 13  # bounded load: at most ceil(1.25 * 40 / 4)
    await engine.generate(ChatRequest("anon", [1], Sampling(max_tokens=1))).__anext__()
    assert llm.ranks[-1] is None  # no session: vLLM balances it


async def test_one_rank_passes_no_rank(vllm_adapter: Any) -> None:
    llm = StandInAsyncLLM()
    engine = vllm_adapter.VllmEngine(llm, model_id="m")
    request = ChatRequest("r", [1], Sampling(max_tokens=1), session_id="s")
    [d async for d in engine.generate(request)]
    assert llm.ranks == [None]


def test_the_setting_reaches_vllms_engine_config(vllm_adapter: Any, demo_model_dir: Path) -> None:
    settings = EngineSettings.from_env(engine="vllm", model=str(demo_model_dir), vllm_data_parallel_size=2)
    args = vllm_adapter.VllmEngine.engine_args(settings)
    assert args.data_parallel_size == 2
    assert args.create_engine_config().parallel_config.data_parallel_size == 2  # vLLM's CPU build accepts it


async def _usage(engine: Any, request: ChatRequest) -> Usage:
    deltas = [d async for d in engine.generate(request)]
    assert deltas[-1].usage is not None
    return deltas[-1].usage


@pytest.mark.vllm
@pytest.mark.timeout(900)  # two engine cores start in ~2 minutes on a loaded 2-core machine
async def test_real_vllm_cpu_with_two_ranks_keeps_each_session_on_its_rank(
    vllm_adapter: Any, demo_model_dir: Path
) -> None:
    engine: Any = load_engine("vllm", model=str(demo_model_dir), vllm_data_parallel_size=2, vllm_max_num_seqs=4)
    try:
        assert engine._engine.vllm_config.parallel_config.data_parallel_size == 2
        prompt = [20 + (7 * i) % 300 for i in range(300)]  # two whole 128-token blocks can be cached

        def turn(session: str, n: int, ids: list[int]) -> ChatRequest:
            return ChatRequest(f"{session}-{n}", ids, Sampling(max_tokens=4, temperature=0.0), session_id=session)

        by_rank: dict[int, str] = {}
        for i in range(64):  # one session on each rank
            by_rank.setdefault(engine.rank_for(turn(f"s{i}", 0, prompt)), f"s{i}")
            if len(by_rank) == 2:
                break
        assert set(by_rank) == {0, 1}
        first, other = by_rank[0], by_rank[1]

        cold = await _usage(engine, turn(first, 1, prompt))
        assert cold.completion_tokens >= 1 and cold.cached_tokens == 0
        warm = await _usage(engine, turn(first, 2, [*prompt, 5, 6, 7]))
        assert warm.cached_tokens >= 256  # the next turn reaches its rank's cache
        # the same prompt on the other rank is cold there: the ranks are separate engines, and the
        # session's rank really is the one its request ran on
        elsewhere = await _usage(engine, turn(other, 1, prompt))
        assert elsewhere.completion_tokens >= 1 and elsewhere.cached_tokens == 0
        assert (await _usage(engine, turn(other, 2, prompt))).cached_tokens >= 256
    finally:
        await engine.aclose()
