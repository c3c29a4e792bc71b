"""``asymcache serve``: run the cache daemon until SIGTERM/SIGINT (see ``cacheserver/cli.py``)."""

from __future__ import annotations

import argparse

NAME = "serve"
HELP = "run the cache daemon (ZeroMQ endpoint, CPU and disk tiers, /metrics)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from asymcache.cacheserver.cli import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from asymcache.cacheserver.cli import run as serve

    return serve(args)
