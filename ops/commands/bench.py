"""``asymcache bench NAME``: benchmarks, one module per benchmark in ``ops/bench/``.

Each benchmark module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and
``run(args) -> int``, exactly like a command. Benchmarks print a table and write JSON; they
are never timed tests.
"""

from __future__ import annotations

import argparse

from asymcache.ops.cli import add_commands, discover

NAME = "bench"
HELP = "run a benchmark (daemon, kernels, engine, e2e, remote) and print its table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    add_commands(sub, discover("asymcache.ops.bench"))


def run(args: argparse.Namespace) -> int:  # pragma: no cover - argparse dispatches to the bench
    raise SystemExit("choose a benchmark: asymcache bench --help")
