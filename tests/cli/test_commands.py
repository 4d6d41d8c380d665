"""The `yap` command: each command module registers itself, and every command still parses and helps."""

from __future__ import annotations

import argparse
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest

from quant import cli as quant_cli
from yap_cli import (
    bench,
    bench_cluster,
    bench_voice,
    client,
    cluster,
    demo,
    harness,
    install,
    keys,
    main,
    serve,
    soak,
    tool,
)

COMMANDS = (
    "serve",
    "demo",
    "bench",
    "client",
    "quant",
    "infer",
    "scenario",
    "server",
    "tool",
    "install",
    "keys",
    "cluster",
)
BENCHMARKS = ("stream", "server", "telemetry", "tool", "soak", "voice", "cluster")
REGISTERS: list[tuple[ModuleType, tuple[str, ...]]] = [
    (serve, ("serve",)),
    (demo, ("demo",)),
    (bench, ("bench",)),
    (client, ("client",)),
    (harness, ("infer", "scenario", "server")),
    (tool, ("tool",)),
    (install, ("install",)),
    (keys, ("keys",)),
    (cluster, ("cluster",)),
]


def subparsers() -> Any:
    return argparse.ArgumentParser(prog="yap").add_subparsers(dest="command", required=True)


def commands_of(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A parser's sub-commands by name (aliases included); empty for a leaf."""
    groups = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(groups[0].choices) if groups else {}


def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every runnable command under `parser` (itself when it is one)."""
    below = commands_of(parser)
    return [leaf for child in below.values() for leaf in leaves(child)] if below else [parser]


def test_yap_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "yap_cli", "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = out.stdout.split("{", 1)[1].split("}", 1)[0].split(",")
    assert listed == list(COMMANDS)


@pytest.mark.parametrize(("module", "names"), REGISTERS, ids=lambda v: getattr(v, "__name__", ""))
def test_each_module_registers_its_own_commands(module: ModuleType, names: tuple[str, ...]) -> None:
    commands = subparsers()
    module.register(commands)
    assert tuple(commands.choices) == names
    for name in names:  # every command under it runs code of this module (or of its package)
        for leaf in leaves(commands.choices[name]):
            assert leaf.get_default("run").__module__.startswith(module.__name__), leaf.prog


def test_benchmarks_register_under_bench() -> None:
    benches = bench.register(subparsers())
    soak.register(benches)
    bench_voice.register(benches)
    bench_cluster.register(benches)
    assert tuple(benches.choices) == BENCHMARKS
    assert benches.choices["soak"].get_default("run").__module__ == soak.__name__


def test_main_is_only_the_registrations() -> None:
    """`build_parser` holds no command of its own: its commands are exactly what the modules register."""
    commands = subparsers()
    for module, _ in REGISTERS:
        module.register(commands)
    quant_cli.add_quant_commands(commands)
    assert set(commands_of(main.build_parser())) == set(commands.choices)


@pytest.mark.parametrize(
    "argv",
    [
        ["serve"],
        ["demo", "build"],
        ["bench", "stream"],
        ["bench", "server"],
        ["bench", "telemetry"],
        ["bench", "tool"],
        ["bench", "soak"],
        ["client", "warmup"],
        ["client", "live"],
        ["quant", "plan"],
        ["infer"],
        ["scenario", "run"],
        ["server", "start"],
        ["server", "status"],
        ["server", "stop"],
        ["tool", "classify"],
        ["tool", "eval"],
        ["install"],
    ],
    ids=" ".join,
)
def test_every_command_helps(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main([*argv, "--help"])
    assert exited.value.code == 0
    assert f"usage: yap {' '.join(argv)}" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "values"),
    [
        (["serve", "--vllm", "--model", "demo", "--port", "9000", "--quant", "4bit"], {"vllm": True, "port": 9000}),
        (["demo", "build", "--no-tool", "--no-smollm2"], {"no_tool": True, "no_smollm2": True, "force": False}),
        (["bench", "stream", "--engine", "fake", "--requests", "3"], {"engine": "fake", "requests": 3}),
        (["bench", "server", "--concurrency", "1", "4", "--flush-ms", "0"], {"concurrency": [1, 4], "flush_ms": [0.0]}),
        (["bench", "telemetry", "--rounds", "2"], {"rounds": 2, "concurrency": 16}),
        (["bench", "tool", "--concurrency", "1", "8"], {"concurrency": [1, 8], "model": None}),
        (["bench", "soak", "--sessions", "5"], {"sessions": 5, "engine": "fake"}),
        (["tool", "eval", "--threshold", "0.4", "--json"], {"threshold": 0.4, "json": True}),
        (["install", "--backend", "cpu"], {"backend": "cpu"}),
        (
            ["server", "start", "--port", "9", "--", "yap", "serve"],
            {"port": 9, "server_command_line": ["--", "yap", "serve"]},
        ),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else "",
)
def test_commands_parse_their_flags_as_before(argv: list[str], values: dict[str, Any]) -> None:
    args = main.build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in values} == values
    assert callable(args.run)


def test_a_bad_flag_is_refused_with_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main.main(["bench", "server", "--no-such-flag"])
    assert exited.value.code == 2
    assert "unrecognized arguments: --no-such-flag" in capsys.readouterr().err
