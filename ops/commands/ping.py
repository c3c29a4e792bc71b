"""``asymcache ping``: does the daemon answer? Exit status 0 if it does, 1 if not."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asymcache.cacheserver.protocol.sockets import ClientCurve

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
    add_curve(parser)


def add_curve(parser: argparse.ArgumentParser) -> None:
    """``--curve-server-key`` and ``--curve-client-key``: CURVE to a daemon that requires it."""
    parser.add_argument("--curve-server-key", metavar="FILE",
                        help="the daemon's public certificate (CURVE; with --curve-client-key)")
    parser.add_argument("--curve-client-key", metavar="FILE",
                        help="this client's secret certificate, allowed by the daemon "
                             "(asymcache keys client)")


def curve_of(args: argparse.Namespace) -> ClientCurve | None:
    """The CURVE keys the flags name, or None; SystemExit naming the flag that is missing or
    the file that cannot be read."""
    server, client = args.curve_server_key, args.curve_client_key
    if not server and not client:
        return None
    if not server or not client:
        missing = "--curve-client-key" if server else "--curve-server-key"
        raise SystemExit(f"asymcache {args.command}: {missing} is needed as well")
    from asymcache.cacheserver.protocol.sockets import ClientCurve

    try:
        return ClientCurve.from_files(server, client)
    except (OSError, ValueError) as e:
        raise SystemExit(f"asymcache {args.command}: CURVE keys: {e}") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_endpoint(parser)


def run(args: argparse.Namespace) -> int:
    import time

    from asymcache.cacheserver.protocol.sockets import ping

    t0 = time.perf_counter()
    reply = ping(args.endpoint, timeout_s=args.timeout, curve=curve_of(args))
    if reply is None:
        print(f"no answer from {args.endpoint} within {args.timeout}s")
        return 1
    rtt_ms = (time.perf_counter() - t0) * 1e3
    print(f"pong from {args.endpoint}: epoch {reply.epoch}, protocol v{reply.version}, "
          f"{rtt_ms:.1f} ms")
    return 0
