"""`yap install --test-tools`: the Debian programs the tests drive for real, installed only when missing."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from yap_cli import install


def test_nothing_runs_when_every_program_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.shutil, "which", lambda name: f"/usr/bin/{name}")
    ran: list[Any] = []
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: ran.append(a))
    assert install.install_test_tools() == 0
    assert ran == []


def test_a_missing_program_is_installed_by_its_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(install.shutil, "which", lambda name: None if name == "chromium" else f"/usr/bin/{name}")
    monkeypatch.setattr(install.os, "geteuid", lambda: 0)
    ran: list[list[str]] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(install.subprocess, "run", run)
    assert install.install_test_tools() == 0
    assert ran[-1] == ["apt-get", "install", "-y", "-q", "chromium"]


def test_without_root_it_names_the_command_and_installs_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(install.shutil, "which", lambda name: "/usr/bin/apt-get" if name == "apt-get" else None)
    monkeypatch.setattr(install.os, "geteuid", lambda: 1000)
    monkeypatch.setattr(install.subprocess, "run", lambda *a, **k: pytest.fail("nothing may run"))
    assert install.install_test_tools() == 0
    assert "apt-get install -y -q redis-server chromium" in capsys.readouterr().out
