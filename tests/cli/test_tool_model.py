"""The CLI's tool model: `ToolSettings.resolved_model`, with the demo classifier built when TOOL_MODEL is unset."""

from __future__ import annotations

from pathlib import Path

import pytest

import yap_engines.demo
from yap_cli._common import tool_model
from yap_engines.demo import DEMO_TOOL_NAME
from yap_engines.tool import ToolSettings


@pytest.fixture
def builds(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    built: list[Path] = []
    monkeypatch.setattr(yap_engines.demo, "build_demo_tool", lambda dest: built.append(dest) or dest)
    return built


def test_a_set_tool_model_is_used_as_is_and_nothing_is_built(builds: list[Path], tmp_path: Path) -> None:
    assert tool_model(ToolSettings(tool_model="org/classifier"), tmp_path, announce=True) == "org/classifier"
    assert builds == []


def test_unset_means_the_demo_classifier_built_under_the_engines_dir(
    builds: list[Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = ToolSettings(tool_model=None)
    model = tool_model(settings, tmp_path, announce=True)
    assert model == settings.resolved_model(tmp_path) == str(tmp_path / DEMO_TOOL_NAME)
    assert builds == [tmp_path / DEMO_TOOL_NAME]
    assert f"no TOOL_MODEL set, using the demo classifier in {model}" in capsys.readouterr().err
    tool_model(settings, tmp_path)
    assert capsys.readouterr().err == ""  # announced only when asked (yap serve)
