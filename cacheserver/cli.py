"""Command-line front of the daemon, shared by ``asymcache serve`` and
``python -m asymcache.cacheserver``.

Settings: defaults < the TOML file given with ``--config`` < ``ASYMCACHE_DAEMON_*`` environment
variables < flags (see ``cacheserver/config.py``). Exit status: 0 after a graceful stop, 2 for a
bad configuration, 1 if start-up failed otherwise.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

_HELP = {
    "endpoint": "ipc://PATH or tcp://HOST:PORT to bind",
    "data_dir": "directory of the LMDB disk tier",
    "metrics_port": "HTTP port of /metrics, /healthz, /readyz (0 = no HTTP)",
    "cpu_bytes": "CPU tier size, e.g. 4GiB",
    "cpu_slot_bytes": "CPU slot size = the largest block, e.g. 2MiB",
    "disk_bytes": "disk tier capacity, e.g. 100GiB (0 = no disk tier)",
    "policy": "residency policy of every tier (e.g. lru)",
    "lease_timeout_s": "drop a silent engine's leases after this many seconds",
    "max_inflight": "requests in flight per peer before BUSY",
    "remote.nodes": "host:port,... of the remote tier's cluster (see docs/remote.md)",
    "curve_secret_key_file": "the daemon's CURVE certificate (`asymcache keys server DIR`)",
    "curve_clients_dir": "folder of the allowed clients' public certificates (reloaded live)",
    "insecure_tcp": "serve a tcp endpoint other hosts reach WITHOUT authentication (warned)",
    "oracle_file": "the replayed future for policy belady (benchmarks only: `asymcache bench "
                   "e2e` configuration B writes it)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one ``--field-name VALUE`` flag per setting (``--remote-nodes``
    for ``remote.nodes``)."""
    from asymcache.cacheserver.config import SCHEME
    from asymcache.cacheserver.config_loader import add_flags, keys

    remote = {k: "see docs/remote.md" for k in keys(SCHEME.root) if k.startswith("remote.")}
    quotas = {k: "per-tenant bounds and tenant metrics: see docs/security.md"
              for k in keys(SCHEME.root) if k.startswith("quotas.")}
    add_flags(parser, SCHEME, {**remote, **quotas, **_HELP})


def run(args: argparse.Namespace) -> int:
    from asymcache.cacheserver.config import SCHEME, load_config
    from asymcache.cacheserver.config_loader import given_flags

    try:
        cfg = load_config(args.config, given_flags(args, SCHEME), os.environ)
    except (ValueError, OSError) as e:
        print(f"asymcache serve: bad configuration: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from asymcache.cacheserver.access import AccessError
    from asymcache.cacheserver.oracle_file import OracleFileError
    from asymcache.cacheserver.server import CacheServer
    from asymcache.cacheserver.startup import ShmTooSmall

    try:
        CacheServer(cfg).serve()
    except (ShmTooSmall, AccessError, OracleFileError) as e:
        logging.getLogger("asymcache.server").error("bad configuration: %s", e)
        return 2
    except (OSError, ValueError) as e:
        logging.getLogger("asymcache.server").error("start-up failed: %s", e)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asymcache.cacheserver",
                                     description="Run the AsymCache daemon.")
    add_arguments(parser)
    return run(parser.parse_args(argv))
