"""``asymcache soak``: a bounded soak and crash matrix (issue 18, part 7).

One daemon (CPU, LMDB disk and, with ``redis-server`` installed, a local three-node Redis
Cluster as remote tier) and four ``asymcache engine`` processes serve a mixed greedy load of
two tenants (API keys binding each to its ``cache_salt``; shared, private and identical
"twin" prompts) while faults are injected on a schedule: SIGKILL of the daemon, of an engine and
of a Redis node, a full disk, a corrupted disk value, a damaged database file, a tampered
CPU-tier block and a daemon restart in the middle of a fetch (``ops/soak/``). Every output is
compared with a no-cache engine's; every ``cached_tokens`` with what the tenant itself sent.

Prints progress lines and a table, writes ``soak.json``, ``soak.png`` and the processes' logs
into ``--out`` (default: the folder of ``--json``, else ``asymcache-soak``), and ``--json``.
Exit status 0 when every check holds (no differing output, no cross-tenant hit, no failed
request outside an engine's own kill, every fault recovered, the daemon's RSS, fds and
threads within 5% after warm-up), 1 otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse

NAME = "soak"
HELP = "soak and crash matrix: 4 engines, 2 tenants, all tiers, faults on a schedule (10 min)"


def _minutes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= 60:
        raise argparse.ArgumentTypeError(f"--minutes must be in (0, 60], got {value:g}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=_minutes, default=10.0,
                        help="how long the load runs (default 10, at most 60; faults are "
                             "spread over 12%%-60%% of it, one cycle per 10 minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the summary JSON here")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="folder for soak.json, soak.png and logs/ (default: the folder "
                             "of --json, else asymcache-soak)")
    parser.add_argument("--faults", default=None,
                        help="comma list of the fault kinds to inject (default: all)")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent client requests (default 8, half per tenant)")
    parser.add_argument("--seed", type=int, default=0, help="prompt and mix seed (default 0)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asymcache.ops.soak.config import FAULT_KINDS, SoakConfig
    from asymcache.ops.soak.harness import run_soak

    kinds = FAULT_KINDS if args.faults is None else tuple(
        k.strip() for k in args.faults.split(",") if k.strip())
    try:
        cfg = SoakConfig(minutes=args.minutes, clients=args.clients, seed=args.seed,
                         faults=kinds)
    except ValueError as e:
        print(f"asymcache soak: {e}")
        return 2
    json_path = Path(args.json) if args.json else None
    out = Path(args.out) if args.out else (json_path.parent if json_path else
                                           Path("asymcache-soak"))
    try:
        summary = run_soak(cfg, out, json_path, log=lambda line: print(line, flush=True))
    except (RuntimeError, TimeoutError, OSError) as e:  # the set-up failed (logs in --out)
        print(f"asymcache soak: {e}")
        return 1
    return 0 if summary["passed"] else 1
