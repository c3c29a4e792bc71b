"""The ``asymcache`` command line.

Subcommands are discovered, not listed: every module in ``ops/commands/`` that defines
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int`` becomes
``asymcache NAME``. Command modules import heavy dependencies (torch, matplotlib) inside
``run`` only, so ``asymcache --help``, ``ping`` and ``serve`` stay fast and torch-free.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType


def discover(package: str) -> dict[str, ModuleType]:
    """Import every command module of ``package`` and index it by its ``NAME``."""
    pkg = importlib.import_module(package)
    found: dict[str, ModuleType] = {}
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        name = getattr(module, "NAME", None)
        if name is None:
            continue
        if name in found:
            raise RuntimeError(f"two modules of {package} define the command {name!r}")
        found[name] = module
    return found


def add_commands(subparsers: argparse._SubParsersAction, commands: dict[str, ModuleType]) -> None:
    for name, module in commands.items():
        parser = subparsers.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(parser)
        parser.set_defaults(_run=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asymcache",
        description="AsymCache: a lossless, disaggregated KV-cache service for LLM inference.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_commands(sub, discover("asymcache.ops.commands"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
