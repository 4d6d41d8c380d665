"""`yap bench cluster --parts sticky`: each session's persona is its own, of the asked length."""

from __future__ import annotations

from yap_cli.bench_cluster import persona
from yap_engines.adapters.fake import FakeTokenizer


def test_each_session_has_its_own_persona_of_the_asked_length() -> None:
    tokenizer = FakeTokenizer()
    personas = [persona(tokenizer, f"round_robin {s}", 300) for s in range(16)]
    assert all(len(tokenizer.encode(p)) == 300 for p in personas)
    assert len(set(personas)) == 16
    # the tag opens the persona, so no two sessions share even their first cached block
    assert not any(tokenizer.encode(p)[:16] == tokenizer.encode(personas[0])[:16] for p in personas[1:])
    assert persona(tokenizer, "round_robin 3", 300) == personas[3]  # the same persona in every run
