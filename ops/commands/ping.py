"""``asymcache ping``: does the daemon answer? Exit status 0 if it does, 1 if not."""

from __future__ import annotations

import argparse
import os

NAME = "ping"
HELP = "check that a cache daemon answers (exit status 0 if it does)"
DEFAULT_ENDPOINT = "ipc:///tmp/asymcache.ipc"


def add_endpoint(parser: argparse.ArgumentParser) -> None:
    """``--endpoint`` (default: the daemon's ``ASYMCACHE_DAEMON_ENDPOINT``, the older
    ``ASYMCACHE_ENDPOINT``, or the daemon's default) and ``--timeout``."""
    env = os.environ
    parser.add_argument("--endpoint", default=env.get("ASYMCACHE_DAEMON_ENDPOINT") or env.get(
                            "ASYMCACHE_ENDPOINT", DEFAULT_ENDPOINT),
                        help="daemon endpoint, ipc://PATH or tcp://HOST:PORT")
    parser.add_argument("--timeout", type=float, default=2.0, metavar="S",
                        help="seconds to wait for the reply (default 2)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_endpoint(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from asymcache.cacheserver.protocol.sockets import ping

    t0 = time.perf_counter()
    reply = ping(args.endpoint, timeout_s=args.timeout)
    if reply is None:
        print(f"no answer from {args.endpoint} within {args.timeout}s")
        return 1
    rtt_ms = (time.perf_counter() - t0) * 1e3
    print(f"pong from {args.endpoint}: epoch {reply.epoch}, protocol v{reply.version}, "
          f"{rtt_ms:.1f} ms")
    return 0
