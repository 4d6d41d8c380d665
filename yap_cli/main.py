"""The `yap` command: one module per command, each adding itself with `register(subparsers)`.

A new command is a module under `yap_cli/` with a `register` function that adds its sub-parser(s)
and sets `run(args) -> int`, plus one line in `build_parser` below (a benchmark: one line after
`bench.register`, on `benches`). Every flag can also be set from the environment (flags win). The
Makefile only calls these commands.
"""

from __future__ import annotations

import argparse
import sys

from quant.cli import add_quant_commands
from yap_engines.errors import BackendUnavailableError
from yap_engines.settings import SettingsError

from . import bench, bench_cluster, bench_voice, client, cluster, demo, harness, install, keys, serve, soak, tool


def build_parser() -> argparse.ArgumentParser:
    """The `yap` parser: every command module registers itself here, in `yap --help` order."""
    parser = argparse.ArgumentParser(prog="yap", description="Yap: real-time conversational inference")
    commands = parser.add_subparsers(dest="command", required=True)
    serve.register(commands)  # yap serve
    demo.register(commands)  # yap demo build
    benches = bench.register(commands)  # yap bench stream|server|telemetry|tool
    soak.register(benches)  # yap bench soak
    bench_voice.register(benches)  # yap bench voice
    bench_cluster.register(benches)  # yap bench cluster
    client.register(commands)  # yap client <command>
    add_quant_commands(commands)  # yap quant plan|build|eval|push|env
    harness.register(commands)  # yap infer, yap scenario run, yap server start|status|stop
    tool.register(commands)  # yap tool classify|eval
    install.register(commands)  # yap install
    keys.register(commands)  # yap keys add|list|revoke
    cluster.register(commands)  # yap cluster up|status|down
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `yap` with `argv` (default: the process's arguments); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except SettingsError as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 2
    except BackendUnavailableError as exc:
        print(f"yap: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
