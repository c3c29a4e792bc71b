"""``asymcache simulate``: replay a trace through residency policies and compare them.

Example (the Mooncake goal table, see docs/policy.md)::

    asymcache simulate --trace ../shared/traces/mooncake_fast25/conversation_trace.jsonl \\
        --policy lru_tail,lru,asym,belady --semantics prefix,msa \\
        --gpu-frac 0.005,0.1,0.2 --cost-model h100-llama3-8b --json out.json --plot out.png
"""

from __future__ import annotations

import argparse

NAME = "simulate"
HELP = "replay a KV-cache trace through residency policies (TTFT, hit ratios, gap closed)"


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--trace", required=True,
                        help="trace file, or a generator spec such as chat:sessions=500,seed=1")
    parser.add_argument("--format", default=None,
                        help="mooncake | azure | chat | agent (default: from the file suffix)")
    parser.add_argument("--trace-opts", default="",
                        help="key=value,... for the format (e.g. Azure synthesis parameters)")
    parser.add_argument("--policy", type=_csv, default=["lru_tail", "asym", "belady"],
                        help="policies, comma-separated (default: lru_tail,asym,belady); "
                        "options as NAME:key=value;key=value, e.g. asym:select=false")
    parser.add_argument("--semantics", type=_csv, default=["prefix", "msa"],
                        help="reuse semantics: prefix, msa or both (default: prefix,msa)")
    parser.add_argument("--gpu-frac", type=_csv, default=None, metavar="F[,F...]",
                        help="GPU tier sizes as fractions of the unique blocks")
    parser.add_argument("--gpu-size", type=_csv, default=None, metavar="S[,S...]",
                        help="GPU tier sizes as blocks (5000), bytes (80GiB) or percent (1%%)")
    parser.add_argument("--cpu-frac", default="", metavar="F|S",
                        help="add a CPU tier of this size (fraction, blocks or bytes)")
    parser.add_argument("--disk-frac", default="", metavar="F|S",
                        help="add a disk tier of this size (fraction, blocks or bytes)")
    parser.add_argument("--cost-model", default="h100-llama3-8b",
                        help="a preset name or the path of a JSON cost profile")
    parser.add_argument("--signals", choices=("on", "off"), default=None,
                        help="replay the trace's client signals: sessions, session ends, "
                        "retention, TTL pins (default: on when the trace carries any)")
    parser.add_argument("--queue", action="store_true",
                        help="also report TTFT with one FIFO prefill server on the arrival times")
    parser.add_argument("--tpot-s", type=float, default=None, metavar="S",
                        help="model requests in flight: each keeps its GPU blocks until its "
                        "last token, S seconds per output token after its prefill (one FIFO "
                        "prefill server); default: one request at a time")
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="multiply arrival times (and TTL pins) by this factor")
    parser.add_argument("--limit", type=int, default=0, help="replay only the first N requests")
    parser.add_argument("--write-trace", default=None, metavar="PATH",
                        help="also write the trace as replayed (generators included) as JSONL "
                        "in the Mooncake superset with sessions (docs/policy.md)")
    parser.add_argument("--json", default=None, help="write one JSON row per run here")
    parser.add_argument("--plot", default=None, help="write a PNG of TTFT against GPU size")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown here")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from asymcache.ops.sim.cli import simulate

    return simulate(args)
