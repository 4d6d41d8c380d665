"""The legacy `trtllm-build` step: runs only with LEGACY_ENGINE=1 and the command installed, else says why not.

TensorRT-LLM cannot be installed here, so the command is a stand-in script that records its arguments."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from quant.errors import RunnerError
from quant.runners.trtllm_build import EngineLimits, build_engine

LIMITS = EngineLimits(max_batch_size=8, max_input_len=5025, max_seq_len=5175)


def artifact_with_checkpoint(root: Path) -> Path:
    (root / "trtllm-ckpt").mkdir(parents=True)
    (root / "trtllm-ckpt" / "config.json").write_text('{"quantization": {"quant_algo": "FP8"}}')
    return root


def stub(root: Path, body: str) -> str:
    path = root / "trtllm-build"
    path.write_text(f"#!{sys.executable}\nimport json, os, pathlib, sys\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def test_without_legacy_engine_nothing_runs(tmp_path: Path) -> None:
    record = build_engine(tmp_path, enabled=False, limits=LIMITS, log=tmp_path / "log", which=lambda _: "/bin/false")
    assert not record["built"] and record["reason"].startswith("LEGACY_ENGINE is not set")


def test_without_trtllm_build_it_says_so(tmp_path: Path) -> None:
    record = build_engine(tmp_path, enabled=True, limits=LIMITS, log=tmp_path / "log", which=lambda _: None)
    assert record == {
        "built": False,
        "reason": "LEGACY_ENGINE=1 but trtllm-build is not on PATH: run the build where TensorRT-LLM is installed "
        "(the TRT image) to compile an engine",
    }
    assert build_engine(tmp_path, enabled=True, limits=LIMITS, log=tmp_path / "log", which=lambda _: "/bin/true") == {
        "built": False,
        "reason": "no TensorRT-LLM checkpoint in trtllm-ckpt/ to compile",
    }


def test_trtllm_build_compiles_the_checkpoint(tmp_path: Path) -> None:
    artifact = artifact_with_checkpoint(tmp_path / "build")
    exe = stub(
        tmp_path,
        "pathlib.Path('argv.json').write_text(json.dumps({'cwd': os.getcwd(), 'argv': sys.argv[1:]}))\n"
        "out = pathlib.Path(sys.argv[sys.argv.index('--output_dir') + 1]); out.mkdir()\n"
        "(out / 'rank0.engine').write_bytes(b'x')\nprint('engine built')",
    )
    record = build_engine(artifact, enabled=True, limits=LIMITS, log=artifact / "build.log", which=lambda _: exe)
    seen = json.loads((artifact / "argv.json").read_text())
    assert seen["cwd"] == str(artifact)
    assert seen["argv"] == ["--checkpoint_dir", "trtllm-ckpt", "--output_dir", "trtllm-engine", "--max_batch_size",
                            "8", "--max_input_len", "5025", "--max_seq_len", "5175", "--gemm_plugin", "auto",
                            "--workers", "1"]  # fmt: skip
    assert record["built"] and record["dir"] == "trtllm-engine" and record["command"] == ["trtllm-build", *seen["argv"]]
    assert record["versions"] == {"tensorrt_llm": "unknown", "cuda": "none"}  # the stub's python has a CPU torch
    assert (artifact / "trtllm-engine" / "rank0.engine").is_file()
    assert "engine built" in (artifact / "build.log").read_text()


def test_a_failing_trtllm_build_names_its_log(tmp_path: Path) -> None:
    artifact = artifact_with_checkpoint(tmp_path / "build")
    exe = stub(tmp_path, "print('out of memory', file=sys.stderr); sys.exit(3)")
    with pytest.raises(RunnerError, match=r"trtllm-build exited with status 3 \(log: .*build.log\)"):
        build_engine(artifact, enabled=True, limits=LIMITS, log=artifact / "build.log", which=lambda _: exe)
    assert "out of memory" in (artifact / "build.log").read_text()
