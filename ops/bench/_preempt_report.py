"""Figures of ``asymcache bench preempt``: one row per run, the paired ratios per round and
their median, the goals, the printed table and the plot of latency over time.

Per run (times in seconds; requests in workload order):

* ``p50_latency_s``/``p99_latency_s``: due time (its arrival on the schedule) to last token,
  over every request, whichever hosts it went through;
* ``ttft_p50_s``/``ttft_p99_s``: due time to first token;
* ``resumed_requests``: requests that moved to another host after a drain (with the tokens
  generated so far, or none yet when the drain caught them in prefill) or a lost connection;
  ``resume_ttft_*``: for the part that finished each of them, its resend to its first token
  (what the move cost the user once the client knew);
* ``tokens_recomputed``: over those parts, prompt tokens (prompt and resumed tokens) not served
  from any cache (``usage.prompt_tokens - cached_tokens``); ``resumed_cached_tokens``: those
  served from one;
* ``bytes_flushed``: bytes the drains wrote through the daemon, counted when the drain reported
  ``flushed`` within the grace period (``POST /v1/admin/drain``'s reply);
* ``outputs_identical``: every request's final text and output token count equal the
  no-preemption run's of the same round.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from asymcache.ops.bench._preempt_client import Record
from asymcache.ops.bench._preempt_run import MODES, RunResult
from asymcache.ops.bench._preempt_schedule import Timing

P99_GOAL_VS_NONE = 1.3  # P99 with preemptions (cache) at most this times P99 without
P99_GOAL_RECOMPUTE = 2.0  # P99 of resume-by-recompute at least this times P99 of cache


def row(run: RunResult, timing: Timing, round_: int) -> dict[str, Any]:
    """The figures of one run (module doc), with its texts (``outputs``) for the check."""
    recs = run.records
    lat = [r.latency for r in recs]
    resumed = [r.resumed for r in recs if r.resumed is not None]
    waits = [p.first - p.sent for p in resumed if p.first is not None]
    recomputed = [p.recomputed_tokens for p in resumed if p.recomputed_tokens is not None]
    cached = [p.usage["prompt_tokens_details"]["cached_tokens"] for p in resumed if p.usage]
    drains = [e.get("drain", {}) for e in run.events]
    in_grace = [d for d in drains if d.get("flushed") and d.get("elapsed_s", 1e9)
                <= timing.grace_s]
    return {
        "round": round_, "mode": run.mode, "requests": len(recs),
        "p50_latency_s": _pct(lat, 50), "p99_latency_s": _pct(lat, 99),
        "mean_latency_s": statistics.fmean(lat),
        "ttft_p50_s": _pct([r.ttft for r in recs], 50),
        "ttft_p99_s": _pct([r.ttft for r in recs], 99),
        "preemptions": len(run.events),
        "drained_requests": sum(int(d.get("drained_requests", 0)) for d in drains),
        "resumed_requests": len(resumed),
        "resume_ttft_median_s": statistics.median(waits) if waits else None,
        "resume_ttft_p99_s": _pct(waits, 99) if waits else None,
        "tokens_recomputed": sum(recomputed),
        "resumed_cached_tokens": sum(cached),
        "moves": sum(len(r.parts) - 1 for r in recs),
        "bytes_flushed": sum(int(d.get("bytes_written", 0)) for d in in_grace),
        "drains_flushed": f"{len(in_grace)}/{len(drains)}",
        "resumed": [_resumed(r) for r in recs if r.resumed is not None],
        "events": run.events,
        "points": [[round(r.due - run.t0, 3), round(r.latency, 4), r.resumed is not None,
                    "/".join(r.hosts)] for r in recs],
        "outputs": {r.request_id: [r.text, r.completion_tokens] for r in recs},
    }


def _resumed(rec: Record) -> dict[str, Any]:
    """What one moved request saw: its hosts, the tokens it carried, its last part's usage."""
    part = rec.resumed
    assert part is not None
    usage = part.usage or {}
    return {"request_id": rec.request_id, "hosts": rec.hosts, "resume_tokens": part.resume_tokens,
            "prompt_tokens": usage.get("prompt_tokens"),
            "cached_tokens": usage.get("prompt_tokens_details", {}).get("cached_tokens"),
            "resume_ttft_s": None if part.first is None else round(part.first - part.sent, 4),
            "latency_s": round(rec.latency, 4)}


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Paired ratios per round and their medians, the output check and the goals."""
    by = {(r["round"], r["mode"]): r for r in rows}
    rounds = sorted({r["round"] for r in rows})
    mismatches = []
    for (rnd, mode), r in sorted(by.items()):
        ref = by.get((rnd, "none"))
        bad = [] if ref is None else [k for k, v in r["outputs"].items()
                                      if ref["outputs"].get(k) != v]
        r["outputs_identical"] = ref is not None and not bad
        mismatches += [_mismatch(rnd, mode, k, ref["outputs"][k], r["outputs"][k]) for k in bad]
    vs_none = _ratios(by, rounds, "cache", "none")
    recompute = _ratios(by, rounds, "recompute", "cache")
    out: dict[str, Any] = {
        "p99_ratio_vs_no_preempt": statistics.median(vs_none) if vs_none else None,
        "p99_ratio_vs_no_preempt_rounds": vs_none,
        "p99_ratio_recompute_vs_cache": statistics.median(recompute) if recompute else None,
        "p99_ratio_recompute_vs_cache_rounds": recompute,
        "outputs_identical": all(r["outputs_identical"] for r in rows),
        "mismatches": mismatches[:50],
        "modes": {m: _medians([r for r in rows if r["mode"] == m]) for m in MODES
                  if any(r["mode"] == m for r in rows)},
    }
    out["goals"] = {
        "p99_within_1.3x_of_no_preempt": _goal(out["p99_ratio_vs_no_preempt"],
                                               lambda x: x <= P99_GOAL_VS_NONE),
        "p99_2x_better_than_recompute": _goal(out["p99_ratio_recompute_vs_cache"],
                                              lambda x: x >= P99_GOAL_RECOMPUTE),
        "outputs_identical": out["outputs_identical"]}
    return out


def _mismatch(rnd: int, mode: str, request_id: str, want: list, got: list) -> dict[str, Any]:
    """Where a request's output differs: the first differing character, with context."""
    (a, n_a), (b, n_b) = want, got
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a),
                                                                                    len(b)))
    return {"round": rnd, "mode": mode, "request_id": request_id,
            "output_tokens": [n_a, n_b], "first_char": at,
            "expected": a[max(0, at - 12):at + 12], "got": b[max(0, at - 12):at + 12]}


def _ratios(by: dict, rounds: list[int], top: str, bottom: str) -> list[float]:
    return [by[(r, top)]["p99_latency_s"] / by[(r, bottom)]["p99_latency_s"]
            for r in rounds if (r, top) in by and (r, bottom) in by]


def _goal(value: float | None, met) -> bool | None:
    return None if value is None else bool(met(value))


MEDIAN_KEYS = ("p50_latency_s", "p99_latency_s", "ttft_p50_s", "ttft_p99_s", "resumed_requests",
               "resume_ttft_median_s", "resume_ttft_p99_s", "tokens_recomputed",
               "resumed_cached_tokens", "bytes_flushed")


def _medians(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for k in MEDIAN_KEYS:
        vals = [r[k] for r in rows if r[k] is not None]
        out[k] = statistics.median(vals) if vals else None
    return out


def public(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without their texts (for JSON)."""
    return [{k: v for k, v in r.items() if k != "outputs"} for r in rows]


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1e3:.0f}"


def print_table(rows: list[dict[str, Any]], result: dict[str, Any]) -> None:
    print(f"\n{'mode':<10} {'round':>5} {'P50 ms':>7} {'P99 ms':>7} {'TTFT50':>7} "
          f"{'TTFT99':>7} {'resumed':>7} {'res.TTFT med/p99 ms':>19} {'recomp.tok':>10} "
          f"{'flushed MB':>10} {'identical':>9}")
    for r in sorted(rows, key=lambda r: (MODES.index(r["mode"]), r["round"])):
        print(f"{r['mode']:<10} {r['round'] + 1:>5} {_ms(r['p50_latency_s']):>7} "
              f"{_ms(r['p99_latency_s']):>7} {_ms(r['ttft_p50_s']):>7} "
              f"{_ms(r['ttft_p99_s']):>7} {r['resumed_requests']:>7} "
              f"{_ms(r['resume_ttft_median_s']) + '/' + _ms(r['resume_ttft_p99_s']):>19} "
              f"{r['tokens_recomputed']:>10} {r['bytes_flushed'] / 1e6:>10.2f} "
              f"{r['outputs_identical']!s:>9}")
    for m, v in result["modes"].items():
        print(f"{m + ' med':<10} {'':>5} {_ms(v['p50_latency_s']):>7} {_ms(v['p99_latency_s']):>7}"
              f" {_ms(v['ttft_p50_s']):>7} {_ms(v['ttft_p99_s']):>7} "
              f"{v['resumed_requests'] or 0:>7.0f} "
              f"{_ms(v['resume_ttft_median_s']) + '/' + _ms(v['resume_ttft_p99_s']):>19} "
              f"{v['tokens_recomputed'] or 0:>10.0f} {(v['bytes_flushed'] or 0) / 1e6:>10.2f}")
    for key, label, goal in (
            ("p99_ratio_vs_no_preempt", "P99 cache / no preemption", f"<= {P99_GOAL_VS_NONE}"),
            ("p99_ratio_recompute_vs_cache", "P99 recompute / cache", f">= {P99_GOAL_RECOMPUTE}")):
        rounds = " ".join(f"{x:.2f}" for x in result[f"{key}_rounds"])
        value = result[key]
        met = result["goals"]["p99_within_1.3x_of_no_preempt" if "no_preempt" in key
                              else "p99_2x_better_than_recompute"]
        shown = "-" if value is None else f"{value:.2f}"
        verdict = "n/a" if met is None else ("met" if met else "missed")
        print(f"{label}: per round {rounds or '-'}; median {shown} (goal {goal}: {verdict})")
    same = "identical" if result["outputs_identical"] else \
        f"DIFFER in {len(result['mismatches'])} request(s)"
    print(f"outputs vs the no-preemption run, request by request: {same}")


def plot(rows: list[dict[str, Any]], timing: Timing, path: Path) -> None:
    """Latency over time of every run: a row per mode, a column per round; preemptions marked
    (grace: orange, host out until its replacement serves: grey; moved requests in red)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    rounds = sorted({r["round"] for r in rows})
    fig, axes = plt.subplots(len(modes), len(rounds), figsize=(4.2 * len(rounds) + 1.5,
                                                              2.3 * len(modes) + 0.8),
                             sharex=True, sharey=True, squeeze=False)
    top = max(p[1] for r in rows for p in r["points"]) * 1.1
    by = {(r["mode"], r["round"]): r for r in rows}
    for i, mode in enumerate(modes):
        for j, rnd in enumerate(rounds):
            if (mode, rnd) in by:
                _panel(axes[i, j], by[(mode, rnd)], timing, top)
        axes[i, 0].set_ylabel(f"{mode}\nlatency (s)")
    for j, rnd in enumerate(rounds):
        axes[-1, j].set_xlabel(f"arrival (s), round {rnd + 1}")
    fig.suptitle("request latency over time; orange: notice and grace, grey: host out until "
                 "its replacement serves, red: requests that moved", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _panel(ax: Any, r: dict[str, Any], timing: Timing, top: float) -> None:
    for e in r["events"]:
        gone = e.get("gone_s", e["notice_s"] + timing.grace_s)
        ax.axvspan(e["notice_s"], gone, color="tab:orange", alpha=0.25, lw=0)
        ax.axvspan(gone, e.get("up_s", gone), color="0.6", alpha=0.2, lw=0)
        ax.text(e["notice_s"], top * 0.97, f" {e['host']}", va="top", fontsize=7)
    for moved, color, size in ((False, "tab:blue", 4), (True, "tab:red", 7)):
        pts = [p for p in r["points"] if p[2] == moved]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], ".", color=color, markersize=size)
    ax.axhline(r["p99_latency_s"], color="k", ls="--", lw=0.8)
    ax.set_ylim(0, top)
    ax.set_title(f"P50 {r['p50_latency_s'] * 1e3:.0f} ms, P99 {r['p99_latency_s'] * 1e3:.0f} ms "
                 f"(dashed), {r['resumed_requests']} moved", fontsize=8)
