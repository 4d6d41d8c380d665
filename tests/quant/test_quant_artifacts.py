"""The artifact store and its keys, without running any tool."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from quant.artifacts import ArtifactStore, build_key, fingerprint_dir, hash_files, sha256_file, slug
from quant.metadata import METADATA_FILE, BuildMetadata
from quant.plan import plan


@pytest.mark.parametrize(
    ("model", "name"),
    [("Qwen/Qwen3-0.6B", "qwen3-0.6b"), ("engines/demo-chat", "demo-chat"), ("/models/My Model/", "my-model"),
     ("org/Llama-3.1-8B-Instruct", "llama-3.1-8b-instruct")],
)  # fmt: skip
def test_slugs(model: str, name: str) -> None:
    assert slug(model) == name


def test_keys_are_stable_and_sensitive() -> None:
    a = build_key(model="m", revision="r", plan={"method": "awq"}, sm=90)
    assert a == build_key(sm=90, plan={"method": "awq"}, revision="r", model="m")
    assert len(a) == 12
    assert a != build_key(model="m", revision="r", plan={"method": "awq"}, sm=89)
    assert a != build_key(model="m", revision="r2", plan={"method": "awq"}, sm=90)


def test_a_local_model_is_fingerprinted_by_its_content(tmp_path: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    (one / "config.json").write_text("{}")
    (one / "model.safetensors").write_bytes(b"\0" * 1000)
    two = tmp_path / "two"
    shutil.copytree(one, two)
    assert fingerprint_dir(one) == fingerprint_dir(two) and fingerprint_dir(one).startswith("local-")
    (two / "model.safetensors").write_bytes(b"\1" + b"\0" * 999)
    assert fingerprint_dir(one) != fingerprint_dir(two)


def make_meta(path: Path, key: str, created_at: str, backend: str = "vllm") -> BuildMetadata:
    p = plan("org/m", backend, "4bit", 90)
    meta = BuildMetadata(
        key=key, model="org/m", revision="r", plan=p, sm=90, gpu=None, device="cpu", versions={}, calibration=None,
        recipe=list(p.recipe), durations={"total": 1.0}, files=hash_files(path, frozenset({METADATA_FILE})),
        runner={}, created_at=created_at,
    )  # fmt: skip
    meta.write(path)
    return meta


def test_the_store_finds_finished_builds_only(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    dest = store.dir_for("org/m", "abc")
    assert dest == tmp_path / "m-abc"
    staging = store.staging(dest)
    assert staging.name == "m-abc.partial" and not any(staging.iterdir())
    (staging / "model.safetensors").write_bytes(b"weights")
    meta = make_meta(staging, "abc", "2026-01-01T00:00:00+00:00")
    assert store.cached(dest, "abc") is None  # not committed yet
    store.commit(staging, dest)
    assert not staging.exists()
    assert store.cached(dest, "abc") == meta == BuildMetadata.read(dest)
    assert meta.files == {"model.safetensors": sha256_file(dest / "model.safetensors")}
    assert store.cached(dest, "other") is None
    (dest / "model.safetensors").unlink()
    assert store.cached(dest, "abc") is None  # a file it lists is gone


def test_builds_lists_newest_first_and_filters(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path)
    for key, when, backend in (("a", "2026-01-01T00:00:00+00:00", "vllm"), ("b", "2026-02-01T00:00:00+00:00", "trt")):
        path = store.dir_for("org/m", key)
        path.mkdir()
        make_meta(path, key, when, backend)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / METADATA_FILE).write_text("not json")
    assert [m.key for _, m in store.builds()] == ["b", "a"]
    assert [m.key for _, m in store.builds(backend="vllm")] == ["a"]
    assert store.builds(model="other") == []
