"""`.venv-quant`: created once through `yap quant env`'s code path, instant afterwards, and what it holds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from quant_support import QUANT_VENV, REPO

from quant.env import STAMP, QuantEnv, _pip_index_args, ensure_env, load_env, requirements
from quant.errors import QuantEnvError

pytestmark = pytest.mark.quant


def test_the_environment_holds_the_pinned_tools(quant_env: QuantEnv) -> None:
    assert quant_env.root == QUANT_VENV and quant_env.python.exists()
    assert quant_env.versions["llmcompressor"] == "0.14.0.1"
    assert quant_env.versions["nvidia-modelopt"] == "0.47.0"
    assert quant_env.versions["torch"].startswith("2.13.0")
    # ModelOpt imports `requests` without declaring it; the environment must carry it anyway.
    code = "import importlib.metadata as m; print(m.version('requests'))"
    out = subprocess.run([str(quant_env.python), "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0 and out.stdout.strip()
    stamp = json.loads((QUANT_VENV / STAMP).read_text())
    assert stamp["versions"] == dict(quant_env.versions) and tuple(stamp["requirements"]) == quant_env.requirements


def test_a_second_call_is_instant(quant_env: QuantEnv) -> None:
    started = time.perf_counter()
    again = ensure_env(QUANT_VENV, log=lambda line: pytest.fail(f"reinstalled: {line}"))
    assert time.perf_counter() - started < 1
    assert again == quant_env
    out = subprocess.run([sys.executable, "-m", "quant.cli", "env", "--path", str(QUANT_VENV)], cwd=REPO,
                         capture_output=True, text=True, check=True)  # fmt: skip
    assert out.stdout.startswith(f"{QUANT_VENV}: torch {quant_env.versions['torch']}")
    assert out.stderr == ""  # nothing installed, nothing logged


def test_requirements_follow_the_machine() -> None:
    assert requirements(gpu=False)[0] == "torch==2.13.0+cpu"
    assert requirements(gpu=True)[0] == "torch==2.13.0"
    assert requirements(gpu=True)[1:] == ("llmcompressor==0.14.0.1", "nvidia-modelopt==0.47.0", "requests")


def test_a_missing_environment_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(
        QuantEnvError, match=r"no quantization environment at .*: run `yap quant env` \(or `make quant-env`\)"
    ):
        load_env(tmp_path / "nowhere")


def test_uv_gets_the_indexes_pip_is_configured_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nindex-url = https://mirror.example/simple\nextra-index-url =\n"
                      "    https://a.example/simple\n    https://b.example/simple\n")  # fmt: skip
    for key in [k for k in os.environ if k.startswith("PIP_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_FIND_LINKS", "/srv/wheels")
    args = _pip_index_args(Path(sys.executable))
    pairs = list(zip(args[::2], args[1::2], strict=True))
    assert ("--index-url", "https://mirror.example/simple") in pairs
    assert ("--extra-index-url", "https://a.example/simple") in pairs
    assert ("--extra-index-url", "https://b.example/simple") in pairs
    assert ("--find-links", "/srv/wheels") in pairs
    assert len(pairs) == len(set(pairs)) == 4


def test_changed_pins_make_the_environment_stale(tmp_path: Path) -> None:
    from quant.env import _up_to_date

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "python").write_text("")
    for current in (requirements(gpu=False), requirements(gpu=True)):
        (tmp_path / STAMP).write_text(json.dumps({"requirements": list(current), "versions": {"torch": "x"}}))
        assert _up_to_date(tmp_path, None) == QuantEnv(tmp_path, current, {"torch": "x"})
    assert _up_to_date(tmp_path, False) is None  # a GPU build where a CPU one is asked for
    old = ["torch==2.12.0+cpu", "llmcompressor==0.13.0", "nvidia-modelopt==0.47.0", "requests"]
    (tmp_path / STAMP).write_text(json.dumps({"requirements": old, "versions": {}}))
    assert _up_to_date(tmp_path, None) is None
