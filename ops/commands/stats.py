"""``asymcache stats``: the daemon's STATS as a readable table, or JSON with ``--json``."""

from __future__ import annotations

import argparse

from asymcache.ops.commands.ping import add_endpoint, curve_of

NAME = "stats"
HELP = "print a cache daemon's statistics (a table, or --json for scripts)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_endpoint(parser)
    parser.add_argument("--json", action="store_true", help="print the raw STATS reply as JSON")


def format_stats(stats: dict) -> str:
    """A fixed-width table: one row per tier, then the daemon-wide numbers."""
    cols = ("tier", "blocks", "capacity", "hits", "misses", "evictions", "demotions", "errors")
    rows = [cols]
    for tier, t in stats["tiers"].items():
        errors = ",".join(f"{k}={v}" for k, v in sorted(t["errors"].items())) or "0"
        rows.append((tier, t["blocks"], t["capacity_blocks"], t["hits"], t["misses"],
                     t["evictions"], t["demotions"], errors))
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(str(v).rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    cfg = stats.get("config", {})
    lines.append(f"engines {stats['engines']}, index {stats['index_blocks']} blocks, "
                 f"leases {stats['leases']}, policy {cfg.get('policy', '?')}, "
                 f"epoch {stats['epoch']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from asymcache.engine.client import CacheClient, CacheClientError

    client = CacheClient(args.endpoint, timeout_s=args.timeout, heartbeat=False,
                         curve=curve_of(args))
    try:
        stats = client.stats()
    except CacheClientError as e:
        print(f"asymcache stats: {e}")
        return 1
    finally:
        client.close()
    print(json.dumps(stats, indent=2, sort_keys=True) if args.json else format_stats(stats))
    return 0
