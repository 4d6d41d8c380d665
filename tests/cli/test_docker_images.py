"""The images start: each Dockerfile's COPY lines hold every package its entrypoint imports.

No Docker daemon is needed. The test lays out each image's files as its COPY lines list them (WORKDIR
and all), installs that checkout alone with pip (`--no-deps --target`), and runs the ENTRYPOINT with
`--help` on an interpreter that sees the installed files and the dependencies but not this checkout:
`-S` skips site-packages' `.pth` files, so the development install's editable finder never loads, and
PYTHONPATH holds only the install target and site-packages.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "docker").glob("*/Dockerfile"))
INSTALL_SCRIPT = "docker/install.sh"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@dataclass(frozen=True)
class Copy:
    """One COPY instruction: build-context sources to an absolute destination in the image."""

    sources: tuple[str, ...]
    dest: PurePosixPath
    into_folder: bool  # Docker's rule: several sources, or a destination spelt as a folder (`./`, `dir/`)


@dataclass
class Image:
    """What a Dockerfile puts in its image and runs, as far as starting Yap goes."""

    copies: list[Copy] = field(default_factory=list)
    workdir: PurePosixPath = field(default_factory=lambda: PurePosixPath("/"))
    runs: list[str] = field(default_factory=list)
    entrypoint: list[str] = field(default_factory=list)


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        keyword, _, rest = (pending + line).strip().partition(" ")
        out.append((keyword.upper(), rest.strip()))
        pending = ""
    return out


def parse(dockerfile: str) -> Image:
    """The WORKDIR, COPY, RUN and ENTRYPOINT instructions of a (single-stage) Dockerfile."""
    image = Image()
    for keyword, rest in instructions(dockerfile):
        if keyword == "WORKDIR":
            image.workdir = image.workdir / rest
        elif keyword == "COPY":
            parts = json.loads(rest) if rest.startswith("[") else shlex.split(rest)
            if any(part.startswith("--from") for part in parts):
                raise AssertionError(f"COPY {rest}: copies from another stage or image, which this test cannot lay out")
            *sources, dest = [part for part in parts if not part.startswith("--")]
            folder = len(sources) > 1 or dest.endswith("/") or dest in (".", "..") or dest.endswith("/.")
            image.copies.append(Copy(tuple(sources), image.workdir / dest, folder))
        elif keyword == "RUN":
            image.runs.append(rest)
        elif keyword == "ENTRYPOINT":
            image.entrypoint = json.loads(rest)
    return image


def lay_out(image: Image, fs: Path) -> Path:
    """Copy the build context's files where the COPY lines put them under `fs`; returns the WORKDIR there."""
    caches = shutil.ignore_patterns("__pycache__")  # .dockerignore keeps them out of the build context
    for copy in image.copies:
        dest = fs / copy.dest.relative_to("/")
        for source in copy.sources:
            path = ROOT / source
            if path.is_dir():  # a folder's contents go to the destination
                shutil.copytree(path, dest, ignore=caches, dirs_exist_ok=True)
            else:
                target = dest / path.name if copy.into_folder else dest
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    return fs / image.workdir.relative_to("/")


def start_entrypoint(image: Image, tmp: Path) -> subprocess.CompletedProcess[str]:
    """Install the image's checkout alone and run its entrypoint with `--help`."""
    checkout = lay_out(image, tmp / "fs")
    target = tmp / "installed"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index"]
    pip += ["--no-compile", "--disable-pip-version-check", "--target", str(target), str(checkout)]
    subprocess.run(pip, check=True, capture_output=True, text=True, cwd=tmp, timeout=240)
    program, *arguments = image.entrypoint
    paths = sysconfig.get_paths()
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys([str(target), paths["purelib"], paths["platlib"]]))
    command = [sys.executable, "-S", str(target / "bin" / program), *arguments, "--help"]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp, env=env, timeout=120)


Start = Callable[[Image], subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> Start:
    """`start_entrypoint`, once per distinct file set and entrypoint (the images share theirs)."""
    done: dict[tuple[object, ...], subprocess.CompletedProcess[str]] = {}

    def run(image: Image) -> subprocess.CompletedProcess[str]:
        key = (tuple(image.copies), image.workdir, tuple(image.entrypoint))
        if key not in done:
            done[key] = start_entrypoint(image, tmp_path_factory.mktemp("image"))
        return done[key]

    return run


def test_there_are_images_to_check() -> None:
    assert {path.parent.name for path in DOCKERFILES} >= {"vllm", "trt"}


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.parent.name)
def test_the_image_copies_every_package_and_its_entrypoint_starts(dockerfile: Path, start: Start) -> None:
    image = parse(dockerfile.read_text())
    assert image.entrypoint[:2] == ["yap", "serve"]
    copied = {source.rstrip("/") for copy in image.copies for source in copy.sources}
    shipped = {pattern.rstrip("*") for pattern in PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert shipped <= copied, f"{dockerfile} does not COPY {sorted(shipped - copied)}"
    assert INSTALL_SCRIPT in copied
    installs = [shlex.split(run) for run in image.runs if INSTALL_SCRIPT in run]
    assert installs, f"{dockerfile} does not run the shared install step {INSTALL_SCRIPT}"
    for run in installs:
        assert set(run[-1].split(",")) <= set(PYPROJECT["project"]["optional-dependencies"]), run
    result = start(image)
    assert result.returncode == 0, result.stderr
    assert "usage: yap serve" in result.stdout


def test_a_missing_copy_line_stops_the_entrypoint(start: Start) -> None:
    """The check above can fail: without `COPY yap_cli`, `yap serve` cannot start (nothing else supplies it)."""
    image = parse((ROOT / "docker" / "vllm" / "Dockerfile").read_text())
    image.copies = [copy for copy in image.copies if copy.sources != ("yap_cli",)]
    result = start(image)
    assert result.returncode != 0
    assert "No module named 'yap_cli'" in result.stderr
