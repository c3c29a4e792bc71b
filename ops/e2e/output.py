"""What an end-to-end run leaves behind: the printed report, JSON, Markdown and a PNG.

Files in the output folder: ``e2e.json`` (one row per configuration and rate: the form scripts
read, also written to ``--json``), ``e2e-report.json`` (rows plus the run's conditions:
commit, load average, capacities, calibration, goals; per workload ``b_gap_closed``, the share
of the 3 -> B mean-TTFT gap that 4 closes, null where n/a), ``e2e.md`` and ``e2e.png``.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from asymcache.ops.e2e.experiment import WorkloadResult
from asymcache.ops.e2e.report import (
    BREAKDOWN,
    MEASURED,
    PREDICTED,
    goal_lines,
    markdown_table,
    plot,
)
from asymcache.ops.e2e.report import text_table as table

SWEEP = (("rate/s", "rate_per_s", "{:.2f}"), *MEASURED[:8])
REPEATS = (("round", "repeat", "{}"), *MEASURED[:8], ("busy", "engine_busy_share", "{:.0%}"),
           ("load after", "load_avg_1m_after", "{:.2f}"))


def conditions(repo: Path) -> dict[str, object]:
    """Where and on what this run measured: commit, uncommitted source files, machine, load."""
    status = _git(repo, "status", "--porcelain", "--", "cacheserver", "engine", "kernels",
                  "tiers")
    return {"commit": _git(repo, "rev-parse", "HEAD"),
            "uncommitted_sources": [ln.split(maxsplit=1)[-1] for ln in status.splitlines()],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
            "load_average_start": load_average(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages, rounded."""
    return [round(x, 2) for x in os.getloadavg()]


def _git(repo: Path, *args: str) -> str:
    try:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def print_result(res: WorkloadResult) -> None:
    """The measured table, the time breakdown, the simulator beside it, and the goal lines."""
    head = [r for r in res.rows if r["kind"] == "headline"]
    rate = head[0]["rate_per_s"] if head else 0.0
    print(f"\n== {res.name}: {res.description}; {rate:.2f} requests/s ==")
    print(table(head, MEASURED))
    print("\nwhere TTFT and engine time go (means per request; seconds per run):")
    print(table(head, BREAKDOWN))
    print("\nsimulator (ops/sim) on the same prompts, arrivals and tier sizes:")
    print(table(head, PREDICTED))
    again = [r for r in res.rows if r["kind"] == "repeat"]
    if again:
        print("\nthe same runs repeated (round 0 is the table above):")
        print(table(head + again, REPEATS))
    sweep = [r for r in res.rows if r["kind"] == "sweep"]
    if sweep:
        print("\nrate sweep:")
        print(table(sweep, SWEEP))
    for line in goal_lines(res.goals):
        print(line)


def write_all(out_dir: Path, results: Sequence[WorkloadResult], meta: dict[str, object],
              json_path: str | None) -> Path:
    """Write the four files (side effect: creates ``out_dir``); returns the PNG's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for res in results for r in res.rows]
    text = json.dumps(rows, indent=1, default=float) + "\n"
    (out_dir / "e2e.json").write_text(text)
    if json_path:
        Path(json_path).write_text(text)
    report = {"conditions": meta, "workloads": {
        res.name: {"capacities": res.capacities.to_dict(), "goals": res.goals,
                   "b_gap_closed": res.goals.get("b_gap_closed"),
                   "calibration": res.calibration.to_dict() if res.calibration else None,
                   "description": res.description} for res in results}, "rows": rows}
    (out_dir / "e2e-report.json").write_text(json.dumps(report, indent=1, default=float) + "\n")
    (out_dir / "e2e.md").write_text(markdown(results, meta))
    png = out_dir / "e2e.png"
    load = ", ".join(f"{x:.2f}" for x in meta.get("load_average_start", []))  # type: ignore[attr-defined]
    plot(rows, png, f"asymcache bench e2e · {meta.get('started', '')} · load average {load}")
    return png


def markdown(results: Sequence[WorkloadResult], meta: dict[str, object]) -> str:
    """The report as Markdown (the same tables as printed)."""
    out = ["# asymcache bench e2e", "", "Conditions:", ""]
    out += [f"- {k.replace('_', ' ')}: `{v}`" for k, v in meta.items()] + [""]
    for res in results:
        head = [r for r in res.rows if r["kind"] == "headline"]
        caps = res.capacities
        raised = " (raised: the longest contexts must fit)" if caps.gpu_raised else ""
        rate = f" Rate {head[0]['rate_per_s']:.2f} requests/s." if head else ""
        out += [f"## {res.name}", "", res.description + ".", "",
                f"Tiers: GPU {caps.gpu_blocks} blocks, {caps.frac('gpu'):.1%} of "
                f"{caps.unique_blocks} unique{raised}; CPU {caps.cpu_blocks}, disk "
                f"{caps.disk_blocks}.{rate}", "",
                markdown_table(head, MEASURED), "", "Where the time goes:", "",
                markdown_table(head, BREAKDOWN), "", "Simulator beside it:", "",
                markdown_table(head, PREDICTED), ""]
        again = [r for r in res.rows if r["kind"] == "repeat"]
        if again:
            out += ["The same runs repeated (round 0 is the first table):", "",
                    markdown_table(head + again, REPEATS), ""]
        sweep = [r for r in res.rows if r["kind"] == "sweep"]
        if sweep:
            out += ["Rate sweep:", "", markdown_table(sweep, SWEEP), ""]
        out += [f"- {line}" for line in goal_lines(res.goals)] + [""]
    return "\n".join(out)
