"""Command-line front of the daemon, shared by ``asymcache serve`` and ``python -m cacheserver``.

Flags override the TOML file given with ``--config``; ``ASYMCACHE_*`` environment variables
override both (see ``cacheserver/config.py``). Exit status: 0 after a graceful stop, 2 for a bad
configuration, 1 if start-up failed otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

_FLAGS: tuple[tuple[str, str, type, str], ...] = (
    ("--endpoint", "endpoint", str, "ipc://PATH or tcp://HOST:PORT to bind"),
    ("--data-dir", "data_dir", str, "directory of the LMDB disk tier"),
    ("--metrics-port", "metrics_port", int, "HTTP port of /metrics, /healthz, /readyz (0 = off)"),
    ("--metrics-host", "metrics_host", str, "HTTP address (default 127.0.0.1)"),
    ("--cpu-bytes", "cpu_bytes", str, "CPU tier size, e.g. 4GiB"),
    ("--cpu-slot-bytes", "cpu_slot_bytes", str, "CPU slot size (largest block), e.g. 2MiB"),
    ("--disk-bytes", "disk_bytes", str, "disk tier capacity, e.g. 100GiB (0 = no disk tier)"),
    ("--policy", "policy", str, "residency policy of every tier (e.g. lru)"),
    ("--lease-timeout-s", "lease_timeout_s", float, "drop a silent engine's leases after this"),
    ("--max-inflight", "max_inflight", int, "requests in flight per peer before BUSY"),
    ("--log-level", "log_level", str, "debug, info, warning or error"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="TOML file with configuration fields")
    for flag, dest, typ, help_ in _FLAGS:
        parser.add_argument(flag, dest=dest, type=typ, default=None, help=help_)


def run(args: argparse.Namespace) -> int:
    from cacheserver.config import load_config

    overrides = {dest: getattr(args, dest, None) for _, dest, _, _ in _FLAGS}
    try:
        cfg = load_config(args.config, overrides, os.environ)
    except (ValueError, OSError) as e:
        print(f"asymcache serve: bad configuration: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from cacheserver.server import CacheServer

    try:
        CacheServer(cfg).serve()
    except (OSError, ValueError) as e:
        logging.getLogger("asymcache.server").error("start-up failed: %s", e)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cacheserver",
                                     description="Run the AsymCache daemon.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
