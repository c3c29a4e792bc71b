"""The goal tables of docs/policy.md, computed from ``asymcache simulate --json`` rows.

``python -m asymcache.ops.sim.goals ROWS.json [...] [--pivot P/SEM,...]`` prints Markdown:

* goal 1: per trace, tier set-up and GPU size, mean TTFT of ``lru_tail``/prefix (baseline),
  ``asym``/msa and ``belady``/msa (bound), and the share of the gap ``asym`` closes;
* goal 2: per trace and set-up, ``asym`` against ``lru_tail`` under the same semantics and sizes;
* every other policy on that comparison;
* with ``--pivot``: GPU hit ratio and gap closed of the named runs side by side, and with
  ``--plot PATH`` also their mean TTFT against GPU size (a PNG per the simulator's plot).

Rows are compared on exact mean TTFT: identical decisions give identical figures ("equal").
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

Row = dict[str, object]
HALF = 0.5


def load_rows(paths: Sequence[str | Path]) -> list[Row]:
    """Every row of every JSON file (each a list of objects, as ``--json`` writes them)."""
    rows: list[Row] = []
    for path in paths:
        data = json.loads(Path(path).read_text())
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of simulator rows")
        rows.extend(data)
    return rows


def _case(r: Row) -> tuple:
    return (r["trace"], r["setup"], r["gpu_blocks"], r["cpu_blocks"], r["disk_blocks"])


def _index(rows: Sequence[Row]) -> dict[tuple, dict[tuple[str, str], Row]]:
    out: dict[tuple, dict[tuple[str, str], Row]] = {}
    for r in rows:
        out.setdefault(_case(r), {})[(str(r["policy"]), str(r["semantics"]))] = r
    return out


def _ttft(r: Row) -> float:
    return float(r["ttft_mean_s"])  # type: ignore[arg-type]


def _gap(r: Row) -> str:
    g = r.get("gap_closed")
    return "n/a" if g is None else f"{float(g):.3f}"  # type: ignore[arg-type]


def goal1_table(rows: Sequence[Row], policy: str = "asym") -> str:
    """Markdown: per case, baseline, ``policy``/msa and bound TTFT, gap closed, half or not."""
    out = ["| trace | set-up | GPU tier | TTFT lru_tail/prefix | TTFT " + policy
           + "/msa | TTFT belady/msa | gap closed | ≥ half? |",
           "|---|---|---:|---:|---:|---:|---:|---|"]
    for case, runs in _index(rows).items():
        base, mine = runs.get(("lru_tail", "prefix")), runs.get((policy, "msa"))
        bound = runs.get(("belady", "msa"))
        if base is None or mine is None or bound is None:
            continue
        g = mine.get("gap_closed")
        verdict = "n/a" if g is None else ("yes" if float(g) >= HALF else "no")  # type: ignore[arg-type]
        out.append(f"| {case[0]} | {case[1]} | {float(mine['gpu_frac']):.1%} | {_ttft(base):.4f} | "  # type: ignore[arg-type]
                   f"{_ttft(mine):.4f} | {_ttft(bound):.4f} | {_gap(mine)} | {verdict} |")
    return "\n".join(out)


def compare(rows: Sequence[Row], policy: str,
            against: str = "lru_tail") -> dict[tuple, list[float]]:
    """Per (trace, set-up): relative mean-TTFT gains of ``policy`` over ``against``, one per
    run with the same sizes and semantics (positive: ``policy`` is faster)."""
    out: dict[tuple, list[float]] = {}
    for case, runs in _index(rows).items():
        for (name, sem), r in runs.items():
            ref = runs.get((against, sem))
            if name != policy or ref is None:
                continue
            out.setdefault(case[:2], []).append((_ttft(ref) - _ttft(r)) / _ttft(ref))
    return out


def goal2_table(rows: Sequence[Row], policy: str = "asym") -> str:
    """Markdown: per trace and set-up, how often ``policy`` beats, equals or loses to lru_tail."""
    out = [f"| trace | set-up | runs compared | {policy} better | equal | worse | largest gain"
           " | smallest gain |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (trace, setup), gains in compare(rows, policy).items():
        better = sum(g > 0 for g in gains)
        worse = sum(g < 0 for g in gains)
        out.append(f"| {trace} | {setup} | {len(gains)} | {better} | {len(gains) - better - worse}"
                   f" | {worse} | {max(gains):+.2%} | {min(gains):+.2%} |")
    return "\n".join(out)


def others_table(rows: Sequence[Row], policies: Sequence[str], mine: str = "asym") -> str:
    """Markdown: per policy, runs, losses to lru_tail, wins over ``mine``, worst slowdown."""
    out = [f"| policy | runs | worse than lru_tail | better than {mine} | largest slowdown vs"
           " lru_tail |", "|---|---:|---:|---:|---:|"]
    for policy in policies:
        gains = [g for gs in compare(rows, policy).values() for g in gs]
        if not gains:
            continue
        beats = [g for gs in compare(rows, policy, against=mine).values() for g in gs]
        slow = max(0.0, -min(gains))
        out.append(f"| {policy} | {len(gains)} | {sum(g < 0 for g in gains)} | "
                   f"{sum(g > 0 for g in beats)} | {slow:.1%} |")
    return "\n".join(out)


def pivot_table(rows: Sequence[Row], runs: Sequence[str]) -> str:
    """Markdown: per case, ``gpu hit / gap closed`` of each ``policy/semantics`` in ``runs``."""
    keys = [tuple(r.rsplit("/", 1)) for r in runs]
    if any(len(k) != 2 for k in keys):
        raise ValueError(f"--pivot: expected POLICY/SEMANTICS items, got {list(runs)}")
    out = ["| trace | GPU tier | " + " | ".join(runs) + " |", "|---|---:|" + "---:|" * len(runs)]
    for case, found in _index(rows).items():
        cells = []
        for k in keys:
            r = found.get(k)  # type: ignore[arg-type]
            cells.append("" if r is None else f"{float(r['gpu_hit_ratio']):.3f} / {_gap(r)}")  # type: ignore[arg-type]
        if any(cells):
            frac = next(iter(found.values()))["gpu_frac"]
            out.append(f"| {case[0]} | {float(frac):.1%} | " + " | ".join(cells) + " |")  # type: ignore[arg-type]
    return "\n".join(out)


def select_runs(rows: Sequence[Row], runs: Sequence[str]) -> list[Row]:
    """The rows whose ``policy/semantics`` is in ``runs``, in the order of ``runs``."""
    rank = {r: i for i, r in enumerate(runs)}
    chosen = [r for r in rows if f"{r['policy']}/{r['semantics']}" in rank]
    return sorted(chosen, key=lambda r: rank[f"{r['policy']}/{r['semantics']}"])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the goal tables (Markdown) of the JSON files named in ``argv``."""
    parser = argparse.ArgumentParser(prog="python -m asymcache.ops.sim.goals",
                                     description="goal tables of docs/policy.md")
    parser.add_argument("json", nargs="+", help="files written by asymcache simulate --json")
    parser.add_argument("--pivot", default="", help="POLICY/SEMANTICS,... to show side by side")
    parser.add_argument("--plot", default="", help="with --pivot: write a PNG of those runs")
    parser.add_argument("--title", default="", help="title of the --plot figure")
    parser.add_argument("--others", default="lru,lfu,gdsf,pensieve",
                        help="policies for the comparison with lru_tail and asym")
    args = parser.parse_args(argv)
    rows = load_rows(args.json)
    if args.pivot:
        runs = [p for p in args.pivot.split(",") if p]
        print(pivot_table(rows, runs))
        if args.plot:
            from asymcache.ops.sim.report import plot

            plot(select_runs(rows, runs), args.plot, args.title or str(rows[0]["trace"]))
        return 0
    print("Goal 1\n\n" + goal1_table(rows) + "\n\nGoal 2\n\n" + goal2_table(rows))
    print("\nOther policies\n\n" + others_table(rows, ["asym", *args.others.split(",")]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
