"""``asymcache purge``: remove a tenant's blocks from every tier of a daemon (and the remote
cluster it shares), answering how many left each tier.

The salt never travels: the daemon gets its digest (``blocks.tenant_digest``), which engines
registered with each namespace of the tenant. Exit status 0 when the daemon answered (also when
it knew nothing of the tenant: 0 namespaces), 1 otherwise.
"""

from __future__ import annotations

import argparse
import os

from asymcache.ops.commands.ping import DEFAULT_ENDPOINT, add_curve

NAME = "purge"
HELP = "remove a tenant's cached blocks (by its cache_salt) from every tier"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    parser.add_argument("--endpoint", default=env.get("ASYMCACHE_DAEMON_ENDPOINT") or env.get(
                            "ASYMCACHE_ENDPOINT", DEFAULT_ENDPOINT),
                        help="daemon endpoint, ipc://PATH or tcp://HOST:PORT")
    parser.add_argument("--salt", required=True, help="the tenant's cache_salt (\"\" = the "
                        "requests sent without one)")
    parser.add_argument("--model", default="", help="only this model's blocks: the name an "
                        "engine serves it under, or its fingerprint (default: every model)")
    parser.add_argument("--timeout", type=float, default=120.0, metavar="S",
                        help="seconds to wait for the answer (a scan of the remote cluster "
                             "takes a while; default 120)")
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    add_curve(parser)


def run(args: argparse.Namespace) -> int:
    import json

    from asymcache.cacheserver.blocks import tenant_digest
    from asymcache.engine.client import CacheClient, CacheClientError
    from asymcache.ops.commands.ping import curve_of

    client = CacheClient(args.endpoint, timeout_s=args.timeout, heartbeat=False,
                         curve=curve_of(args))
    try:
        reply = client.purge(tenant_digest(args.salt), args.model)
    except CacheClientError as e:
        print(f"asymcache purge: {e}")
        return 1
    finally:
        client.close()
    removed = dict(reply.removed)
    if args.json:
        print(json.dumps({"namespaces": reply.namespaces, "removed": removed,
                          "total": sum(removed.values())}, sort_keys=True))
    else:
        parts = ", ".join(f"{tier} {n}" for tier, n in removed.items())
        print(f"purged {sum(removed.values())} blocks of {reply.namespaces} namespaces "
              f"({parts})")
    return 0
