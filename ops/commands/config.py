"""``asymcache config show --daemon|--engine [--json] [--config FILE] [FLAGS]``: the effective
configuration of the daemon or an engine, read exactly as ``asymcache serve`` or
``asymcache engine`` would read it from the same file, environment and flags, and where each
value came from (``default``, ``file PATH``, ``env NAME`` or ``flag --name``). Passwords are
masked. Exit status 2 for a bad configuration (the message names the setting).
"""

from __future__ import annotations

import argparse

NAME = "config"
HELP = "show the effective daemon or engine configuration and where each value came from"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["show"])
    parser.add_argument("args", nargs=argparse.REMAINDER,
                        metavar="--daemon|--engine [--json] [--config FILE] [FLAGS]",
                        help="FLAGS: those of `asymcache serve` or `asymcache engine`")


def _program(argv: list[str]) -> tuple[argparse.Namespace, argparse.ArgumentParser]:
    """Which program (``--daemon``/``--engine``, ``--json``), and a parser of its flags."""
    pick = argparse.ArgumentParser(prog="asymcache config show", add_help=False)
    which = pick.add_mutually_exclusive_group(required=True)
    which.add_argument("--daemon", action="store_true")
    which.add_argument("--engine", action="store_true")
    pick.add_argument("--json", action="store_true")
    chosen, rest = pick.parse_known_args(argv)
    flags = argparse.ArgumentParser(prog=f"asymcache config show --{_name(chosen)}")
    if chosen.daemon:
        from asymcache.cacheserver.cli import add_arguments
    else:
        from asymcache.ops.commands.engine import add_arguments
    add_arguments(flags)
    chosen.settings = flags.parse_args(rest)
    return chosen, flags


def _name(chosen: argparse.Namespace) -> str:
    return "daemon" if chosen.daemon else "engine"


def run(args: argparse.Namespace) -> int:
    import json
    import os
    import sys

    from asymcache.cacheserver.config_loader import given_flags, load

    chosen, _ = _program(args.args)
    if chosen.daemon:
        from asymcache.cacheserver.config import SCHEME
    else:
        from asymcache.engine.settings import SCHEME
    try:
        loaded = load(SCHEME, chosen.settings.config, os.environ,
                      given_flags(chosen.settings, SCHEME))
    except ValueError as e:
        print(f"asymcache config show: bad {SCHEME.program} configuration: {e}", file=sys.stderr)
        return 2
    rows = loaded.rows()
    if chosen.json:
        print(json.dumps({"program": SCHEME.program, "settings": {
            key: {"value": value, "source": source} for key, value, source in rows}}, indent=2))
        return 0
    print(f"# {SCHEME.program}: defaults < file < environment ({SCHEME.env_prefix}*) < flags")
    width = max(len(key) for key, _, _ in rows)
    for key, value, source in rows:
        print(f"{key:<{width}}  {json.dumps(value):<28}  {source}")
    return 0
