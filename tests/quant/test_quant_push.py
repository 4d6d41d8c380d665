"""Pushing builds with the real `huggingface_hub` client to a local Hub on 127.0.0.1."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from hub_server import LocalHub
from pydantic import SecretStr
from quant_support import QUANT_VENV, REPO

from quant.build import BuildResult
from quant.cli import add_quant_commands
from quant.detect import inspect_model
from quant.errors import PushError
from quant.metadata import LOG_FILE, METADATA_FILE, BuildMetadata
from quant.plan import plan
from quant.push import push_artifact
from quant.runners.trtllm_build import EngineLimits, build_engine
from quant.settings import QuantSettings

pytestmark = pytest.mark.quant

TOKEN = "hf_yapTestToken0123456789secret"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalHub]:
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    monkeypatch.delenv("HUGGINGFACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    with LocalHub(TOKEN) as server:
        yield server


def settings_for(hub: LocalHub, repo: str, **fields: object) -> QuantSettings:
    return QuantSettings.from_env(hf_endpoint=hub.endpoint, hf_push_repo_id=repo, **fields)


def local_files(artifact: Path) -> dict[str, bytes]:
    return {
        p.relative_to(artifact).as_posix(): p.read_bytes()
        for p in artifact.rglob("*")
        if p.is_file() and p.name != LOG_FILE
    }


def test_push_quant_uploads_the_checkpoint_card_and_metadata_privately(
    hub: LocalHub, demo_builds: dict[str, BuildResult]
) -> None:
    artifact = demo_builds["fp8_dynamic"].path
    assert artifact is not None
    result = push_artifact(artifact, what="quant", settings=settings_for(hub, "yap-test/demo-fp8"))
    repo = hub.state.repos["yap-test/demo-fp8"]
    assert repo.private and result.private
    assert len(repo.commits) == 1 and result.commit_url.endswith(repo.commits[0])
    card = repo.files.pop("README.md").decode()
    assert repo.files == local_files(artifact)  # every checkpoint file, byte for byte, and no build log
    assert json.loads(repo.files[METADATA_FILE]) == json.loads((artifact / METADATA_FILE).read_text())
    meta = BuildMetadata.read(artifact)
    assert "`demo-chat` quantized with **fp8_dynamic**" in card
    assert "| Base model | `demo-chat` (revision `local-" in card
    assert "| GPU | sm90 (Hopper: H100 / H200 / GH200) |" in card
    assert f"llmcompressor {meta.versions['llmcompressor']}, compressed-tensors" in card
    assert "yap serve --engine vllm --model yap-test/demo-fp8" in card
    assert "base_model:" not in card  # a local model has no hub id to link
    for request in hub.state.requests:
        assert request["headers"]["authorization"] == f"Bearer {TOKEN}"


def test_a_pushed_checkpoint_is_planned_from_the_hub_as_pre_quantized(
    hub: LocalHub, demo_builds: dict[str, BuildResult]
) -> None:
    artifact = demo_builds["awq"].path
    assert artifact is not None
    push_artifact(artifact, what="quant", settings=settings_for(hub, "yap-test/demo-awq"))
    info = inspect_model("yap-test/demo-awq", endpoint=hub.endpoint, token=TOKEN)
    assert (info.config_source, info.hf_quant_config) == ("hub", None)
    p = plan(info, "vllm", "auto", None)
    assert (p.action, p.prequantized, p.detected_from) == ("serve_as_is", "compressed-tensors", "config.json")
    assert "pack-quantized, int4 weights" in p.reason


def test_a_hub_model_card_links_its_base_model(
    hub: LocalHub, demo_builds: dict[str, BuildResult], tmp_path: Path
) -> None:
    source = demo_builds["int4_awq"].path
    assert source is not None
    artifact = tmp_path / source.name
    shutil.copytree(source, artifact)
    meta = BuildMetadata.read(artifact)
    meta.model_copy(update={"model": "Qwen/Qwen3-0.6B"}).write(artifact)
    push_artifact(artifact, what="quant", settings=settings_for(hub, "yap-test/qwen-awq", hf_push_private=False))
    repo = hub.state.repos["yap-test/qwen-awq"]
    card = repo.files["README.md"].decode()
    assert not repo.private
    assert card.startswith("---\nbase_model: Qwen/Qwen3-0.6B\n")
    assert "yap serve --engine trt --model yap-test/qwen-awq" in card
    assert "trtllm-ckpt/rank0.safetensors" in repo.files and "hf_quant_config.json" in repo.files


def write_stub_trtllm_build(bin_dir: Path) -> Path:
    """A stand-in `trtllm-build` (TensorRT-LLM cannot be installed here): writes an engine dir like the real one."""
    bin_dir.mkdir(exist_ok=True)
    stub = bin_dir / "trtllm-build"
    stub.write_text(
        f"#!{sys.executable}\n"
        "import json, pathlib, sys\n"
        "args = dict(zip(sys.argv[1::2], sys.argv[2::2]))\n"
        "out = pathlib.Path(args['--output_dir']); out.mkdir(parents=True)\n"
        "(out / 'config.json').write_text(json.dumps({'build_config': args}))\n"
        "(out / 'rank0.engine').write_bytes(b'engine-bytes')\n"
    )
    stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    return stub


def test_push_engine_adds_this_gpus_engine_to_the_existing_repo(
    hub: LocalHub, demo_builds: dict[str, BuildResult], tmp_path: Path
) -> None:
    source = demo_builds["fp8"].path
    assert source is not None
    artifact = tmp_path / source.name
    shutil.copytree(source, artifact)
    settings = settings_for(hub, "yap-test/demo-trt-fp8")
    with pytest.raises(PushError, match=r"has no compiled engine: build with LEGACY_ENGINE=1"):
        push_artifact(artifact, what="engine", settings=settings)

    stub = write_stub_trtllm_build(tmp_path / "bin")
    engine = build_engine(artifact, enabled=True, limits=EngineLimits(8, 5025, 5175), log=artifact / LOG_FILE,
                          which=lambda name: str(stub) if name == "trtllm-build" else None)  # fmt: skip
    meta = BuildMetadata.read(artifact)
    meta.model_copy(update={"legacy_engine": engine}).write(artifact)
    with pytest.raises(PushError, match=r"yap-test/demo-trt-fp8 does not exist: .*push --push-quant first"):
        push_artifact(artifact, what="engine", settings=settings)

    push_artifact(artifact, what="quant", settings=settings)
    before = dict(hub.state.repos["yap-test/demo-trt-fp8"].files)
    assert not any(path.startswith(("trtllm-engine/", "trt-llm/")) for path in before)
    result = push_artifact(artifact, what="engine", settings=settings)
    repo = hub.state.repos["yap-test/demo-trt-fp8"]
    folder = "trt-llm/engines/sm90_trt-llm-unknown_cudanone"  # no tensorrt_llm and a CPU torch behind the stub
    added = {path: data for path, data in repo.files.items() if path not in before}
    assert sorted(added) == [f"{folder}/{name}" for name in ("README.md", METADATA_FILE, "config.json", "rank0.engine")]
    assert added[f"{folder}/rank0.engine"] == b"engine-bytes"
    assert repo.files["README.md"] == before["README.md"]  # the checkpoint's card is left alone
    download = f"huggingface-cli download yap-test/demo-trt-fp8 --include '{folder}/*'"
    assert download in added[f"{folder}/README.md"].decode()
    assert len(repo.commits) == 2 and set(result.files) == set(added)


def test_push_settings_and_credentials_errors(
    hub: LocalHub, demo_builds: dict[str, BuildResult], tmp_path: Path
) -> None:
    artifact = demo_builds["fp8_dynamic"].path
    assert artifact is not None
    with pytest.raises(PushError, match=r"set HF_PUSH_REPO_ID=owner/name"):
        push_artifact(artifact, what="quant", settings=QuantSettings.from_env(hf_endpoint=hub.endpoint))
    no_token = settings_for(hub, "yap-test/x").model_copy(update={"hf_token": None})
    with pytest.raises(PushError, match=r"set HF_TOKEN \(or HUGGINGFACE_HUB_TOKEN\) in the environment"):
        push_artifact(artifact, what="quant", settings=no_token)
    with pytest.raises(PushError, match=r"is not a build .*yap quant build"):
        push_artifact(tmp_path, what="quant", settings=settings_for(hub, "yap-test/x"))
    wrong = settings_for(hub, "yap-test/x").model_copy(update={"hf_token": SecretStr("hf_wrong")})
    with pytest.raises(PushError, match=r"HTTP 401") as err:
        push_artifact(artifact, what="quant", settings=wrong)
    assert "hf_wrong" not in str(err.value)


def test_push_quant_and_push_engine_are_mutually_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(prog="yap")
    add_quant_commands(parser.add_subparsers(dest="command"))
    for argv in (["quant", "push", "engines/x", "--push-quant", "--push-engine"],
                 ["quant", "build", "--push", "--push-engine"], ["quant", "push", "engines/x"]):  # fmt: skip
        with pytest.raises(SystemExit) as exit_:
            parser.parse_args(argv)
        assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --push-engine: not allowed with argument --push-quant" in err
    assert "argument --push-engine: not allowed with argument --push" in err
    assert "one of the arguments --push-quant --push-engine is required" in err
    assert "--token" not in parser.format_help()


def test_build_and_push_from_the_command_line_keep_the_token_out_of_argv_and_logs(
    hub: LocalHub, demo_builds: dict[str, BuildResult], demo_model_dir: Path, tmp_path: Path
) -> None:
    """`yap quant build --push` end to end: a cache hit runs no runner; FORCE_REBUILD=1 runs it again and pushes.

    The runner's command lines are recorded by a shim interpreter in front of `.venv-quant`'s python.
    """
    built = demo_builds["fp8_dynamic"].path
    assert built is not None
    engines = tmp_path / "engines"
    shutil.copytree(built, engines / built.name)
    shim = tmp_path / "venv-shim"
    (shim / "bin").mkdir(parents=True)
    shutil.copy(QUANT_VENV / ".yap-quant.json", shim / ".yap-quant.json")
    argv_log = tmp_path / "argv.log"
    python = shim / "bin" / "python"
    python.write_text(f'#!/bin/sh\necho "$0 $*" >> {argv_log}\nexec {QUANT_VENV}/bin/python "$@"\n')
    python.chmod(0o755)
    env = {**os.environ, "YAP_ENGINES_DIR": str(engines), "YAP_QUANT_VENV": str(shim), "HF_ENDPOINT": hub.endpoint,
           "HF_PUSH_REPO_ID": "yap-test/cli-fp8", "HF_HUB_DISABLE_XET": "1", "PYTHONPATH": str(REPO)}  # fmt: skip
    cmd = [sys.executable, "-m", "quant.cli", "build", "--model", str(demo_model_dir), "--backend", "vllm",
           "--sm", "90", "--json"]  # fmt: skip

    hit = subprocess.run([*cmd, "--mode", "8bit,none"], env=env, capture_output=True, text=True, check=False)
    assert hit.returncode == 0, hit.stderr
    first, none = json.loads(hit.stdout)
    assert first["cached"] and Path(first["path"]).name == built.name
    assert none["path"] is None and none["plan"]["action"] == "none"
    assert not argv_log.exists()  # a cache hit starts no runner

    forced = subprocess.run([*cmd, "--mode", "8bit", "--push"], env={**env, "FORCE_REBUILD": "1"},
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert forced.returncode == 0, forced.stderr
    report = json.loads(forced.stdout)
    assert not report["cached"] and report["pushed"] == "yap-test/cli-fp8"
    assert "llmcompressor quantize done" in forced.stderr and "pushed" in forced.stderr
    rebuilt = Path(report["path"])
    runner_argv = argv_log.read_text()
    assert "-m quant.runners.llmcompressor" in runner_argv
    for text in (runner_argv, forced.stdout, forced.stderr, hit.stderr, (rebuilt / LOG_FILE).read_text(),
                 (rebuilt / METADATA_FILE).read_text()):  # fmt: skip
        assert TOKEN not in text
    repo = hub.state.repos["yap-test/cli-fp8"]
    assert repo.private and "README.md" in repo.files and METADATA_FILE in repo.files
    assert json.loads(repo.files[METADATA_FILE])["runner"]["environment"] == "venv-shim"
