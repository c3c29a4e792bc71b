"""Tables (text and Markdown), goal lines and the PNG of an end-to-end run's rows."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from asymcache.ops.e2e.predict import H100, LOCAL

Row = dict[str, object]
MEASURED = (
    ("id", "config_id", "{}"), ("config", "config", "{}"), ("chunks", "chunking", "{}"),
    ("TTFT mean", "ttft_mean_s", "ms"), ("p50", "ttft_p50_s", "ms"), ("p90", "ttft_p90_s", "ms"),
    ("p99", "ttft_p99_s", "ms"), ("TPOT mean", "tpot_mean_s", "ms"), ("p99", "tpot_p99_s", "ms"),
    ("tok/s", "output_tok_s", "{:.0f}"), ("busy", "engine_busy_share", "{:.0%}"),
    ("hit gpu", "hit_gpu", "{:.0%}"), ("cpu", "hit_cpu", "{:.0%}"), ("disk", "hit_disk", "{:.0%}"),
    ("recomp", "tokens_recomputed", "{}"), ("new", "tokens_new", "{}"),
    ("moved MB", "moved_mb", "{:.1f}"), ("same", "outputs_identical", "yesno"),
)
BREAKDOWN = (
    ("id", "config_id", "{}"), ("config", "config", "{}"), ("TTFT", "ttft_mean_s", "ms"),
    ("lag", "ttft_lag_mean_s", "ms"), ("queue", "ttft_queue_mean_s", "ms"),
    ("prefill", "ttft_prefill_mean_s", "ms"), ("prefill steps s", "prefill_steps_s", "{:.1f}"),
    ("decode steps s", "decode_only_steps_s", "{:.1f}"), ("overdue", "overdue_steps", "{}"),
    ("tokens computed", "prefill_tokens_computed", "{}"), ("daemon RPC s", "daemon_rpc_s",
                                                             "{:.1f}"),
    ("RPC/req", "rpc_per_request", "{:.1f}"), ("daemon/busy", "daemon_share_of_busy", "{:.1%}"),
    ("model/steps", "model_share_of_steps", "{:.0%}"),
    ("admit/steps", "admit_share_of_steps", "{:.1%}"), ("ITL p99", "itl_p99_s", "ms"),
)
PREDICTED = (
    ("id", "config_id", "{}"), ("config", "config", "{}"),
    ("sim TTFT h100", f"sim_{H100}_ttft_s", "ms"), ("gpu hit", f"sim_{H100}_gpu_hit", "{:.0%}"),
    ("cpu", f"sim_{H100}_cpu_hit", "{:.0%}"), ("disk", f"sim_{H100}_disk_hit", "{:.0%}"),
    ("computed", f"sim_{H100}_computed_share", "{:.0%}"),
    ("sim TTFT here", f"sim_{LOCAL}_ttft_s", "ms"), ("measured TTFT", "ttft_mean_s", "ms"),
    ("sim gpu hit here", f"sim_{LOCAL}_gpu_hit", "{:.0%}"), ("measured", "hit_gpu", "{:.0%}"),
    ("sim held", f"sim_{LOCAL}_gpu_held", "{:.0%}"), ("measured held", "pool_held_mean",
                                                    "{:.0%}"),
)


def _cell(row: Row, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if fmt == "ms":
        return f"{float(value) * 1e3:.1f}"  # type: ignore[arg-type]
    if fmt == "yesno":
        return "yes" if value is True else "NO"
    return fmt.format(value)


def text_table(rows: Sequence[Row], columns: Sequence[tuple[str, str, str]] = MEASURED) -> str:
    """A fixed-width table (times in ms)."""
    cells = [[c[0] for c in columns]] + [[_cell(r, k, f) for _, k, f in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[Row], columns: Sequence[tuple[str, str, str]] = MEASURED
                   ) -> str:
    out = ["| " + " | ".join(c[0] for c in columns) + " |", "|" + "---|" * len(columns)]
    out += ["| " + " | ".join(_cell(r, k, f) for _, k, f in columns) + " |" for r in rows]
    return "\n".join(out)


def goal_lines(goals: dict[str, object]) -> list[str]:
    """The two goals of issue 7 as sentences: measured ratio, goal, the simulator's ratios."""
    lines = []
    ttft = goals.get("ttft_ratio_vs_prefix_offload")
    if ttft is not None:
        lines.append(
            f"mean TTFT, prefix-offload (3) / asymcache (4): {ttft:.2f}x"
            f"{_runs(goals.get('ttft_ratio_vs_prefix_offload_runs'))} (goal >= 2.0: "
            f"{'met' if goals['ttft_goal_met'] else 'MISSED'}); simulator: "
            f"{_x(goals.get('sim_ttft_ratio_h100'))} on h100-llama3-8b, "
            f"{_x(goals.get('sim_ttft_ratio_local'))} on this machine's profile")
    bound = goals.get("ttft_bound_vs_prefix_offload")
    if bound is not None:
        lines.append(
            f"  bound: prefix-offload (3) / perfect cache (P): {bound:.2f}x"
            f"{_runs(goals.get('ttft_bound_vs_prefix_offload_runs'))}: what a cache holding "
            f"every block seen before reaches over 3 on these arrivals; simulator: "
            f"{_x(goals.get('sim_ttft_bound_h100'))} on h100-llama3-8b, "
            f"{_x(goals.get('sim_ttft_bound_local'))} on this machine's profile")
    if goals.get("b_gap_closed_runs"):
        lines.append(_b_gap_line(goals))
    tpot = goals.get("tpot_ratio_vs_fixed2048")
    if tpot is not None:
        lines.append(
            f"mean TPOT, fixed 2048 (5c) / adaptive (4): {tpot:.2f}x"
            f"{_runs(goals.get('tpot_ratio_vs_fixed2048_runs'))} at a TTFT ratio of "
            f"{goals['ttft_ratio_vs_fixed2048']:.2f}x"
            f"{_runs(goals.get('ttft_ratio_vs_fixed2048_runs'))} (goal >= 1.6 at equal or "
            f"better TTFT: {'met' if goals['tpot_goal_met'] else 'MISSED'})")
        lines.append(
            f"  bound: TPOT of 5c / its mean decode-only step: "
            f"{_x(goals.get('tpot_bound_vs_fixed2048'))}: what chunking reaches over 5c if no "
            f"prefill ever delayed a decode")
    return lines


def _b_gap_line(goals: dict[str, object]) -> str:
    """Share of the 3 -> B (belady-bound) gap that 4 closes, beside the simulator's."""
    closed = goals.get("b_gap_closed")
    ratios = goals.get("ttft_ratio_vs_belady_runs") or []
    if closed is None:
        ratio = statistics.median(ratios) if ratios else None  # type: ignore[arg-type]
        head = f"n/a (TTFT 3/B {_x(ratio)}{_runs(ratios)}: below 1.2x, no gap worth closing)"
    else:
        head = (f"{float(closed):.0%}{_runs(goals.get('b_gap_closed_runs'))} (goal >= 60%: "  # type: ignore[arg-type]
                f"{'met' if goals.get('b_gap_goal_met') else 'MISSED'})")
    return (f"share of the prefix-offload (3) -> belady-bound (B) mean TTFT gap closed by "
            f"asymcache (4): {head}; simulator: {_pct(goals.get('sim_b_gap_closed_h100'))} on "
            f"h100-llama3-8b, {_pct(goals.get('sim_b_gap_closed_local'))} on this machine's "
            f"profile")


def _pct(value: object) -> str:
    return "n/a" if value is None else f"{float(value):.0%}"  # type: ignore[arg-type]


def _runs(values: object) -> str:
    """`` (median of 3 runs: 0.91, 1.2, 0.8)``, or nothing for a single run."""
    if not isinstance(values, list) or len(values) < 2:
        return ""
    return f" (median of {len(values)} runs: {', '.join(f'{v:.2f}' for v in values)})"


def _x(value: object) -> str:
    return "n/a" if value is None else f"{float(value):.2f}x"  # type: ignore[arg-type]


def plot(rows: Sequence[Row], path: str | Path, title: str) -> None:
    """Per workload: TTFT (mean bar, p90 tick), TPOT (mean, p99 tick) and prompt tokens by
    source for each configuration; TTFT against the arrival rate where a sweep ran. Side
    effect: writes ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = list(dict.fromkeys(str(r["workload"]) for r in rows))
    cols = 4 if any(r.get("kind") == "sweep" for r in rows) else 3
    fig, axes = plt.subplots(len(workloads), cols, figsize=(5.4 * cols, 3.8 * len(workloads)),
                             squeeze=False)
    for ax_row, name in zip(axes, workloads, strict=True):
        head = [r for r in rows if r["workload"] == name and r.get("kind") == "headline"]
        labels = [f"{r['config_id']} {r['config']}" for r in head]
        again = [r for r in rows if r["workload"] == name and r.get("kind") == "repeat"]
        _bars(ax_row[0], labels, [float(r["ttft_mean_s"]) for r in head],  # type: ignore[arg-type]
              [float(r["ttft_p90_s"]) for r in head], f"{name}: TTFT (ms), tick = p90")  # type: ignore[arg-type]
        _repeats(ax_row[0], head, again, "ttft_mean_s")
        _bars(ax_row[1], labels, [float(r["tpot_mean_s"]) for r in head],  # type: ignore[arg-type]
              [float(r["tpot_p99_s"]) for r in head], f"{name}: TPOT (ms), tick = p99")  # type: ignore[arg-type]
        _repeats(ax_row[1], head, again, "tpot_mean_s")
        _sources(ax_row[2], labels, head, name)
        if cols == 4:
            _sweep(ax_row[3], [r for r in rows if r["workload"] == name
                               and r.get("kind") in ("headline", "sweep")], name)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _bars(ax, labels: list[str], means: list[float], ticks: list[float], title: str) -> None:
    xs = range(len(labels))
    ax.bar(xs, [m * 1e3 for m in means], color="tab:blue")
    ax.scatter(xs, [t * 1e3 for t in ticks], marker="_", s=200, color="black", zorder=3)
    ax.set_xticks(list(xs), labels, rotation=35, ha="right", fontsize=7)
    ax.set_title(title, fontsize=9)
    ax.grid(True, axis="y", alpha=0.3)


def _repeats(ax, head: Sequence[Row], again: Sequence[Row], key: str) -> None:
    """Repeated runs' means as dots on their configuration's bar."""
    where = {r["config_id"]: i for i, r in enumerate(head)}
    pts = [(where[r["config_id"]], float(r[key]) * 1e3) for r in again  # type: ignore[arg-type]
           if r["config_id"] in where]
    if pts:
        ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=12, color="tab:orange",
                   zorder=4, label="repeats")
        ax.legend(fontsize=7)


def _sources(ax, labels: list[str], rows: Sequence[Row], name: str) -> None:
    bottom = [0.0] * len(rows)
    for source in ("resident", "fetched_cpu", "fetched_disk", "recomputed", "new"):
        values = [float(r[f"tokens_{source}"]) / 1e3 for r in rows]  # type: ignore[arg-type]
        ax.bar(range(len(rows)), values, bottom=bottom, label=source.replace("_", " "))
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xticks(list(range(len(labels))), labels, rotation=35, ha="right", fontsize=7)
    ax.set_title(f"{name}: prompt tokens by source (thousands)", fontsize=9)
    ax.legend(fontsize=7)


def _sweep(ax, rows: Sequence[Row], name: str) -> None:
    lines: dict[str, list[tuple[float, float]]] = {}
    for r in rows:
        lines.setdefault(str(r["config"]), []).append(
            (float(r["rate_per_s"]), float(r["ttft_mean_s"])))  # type: ignore[arg-type]
    swept = {k: sorted(v) for k, v in lines.items() if len(v) > 1}
    if not swept:
        ax.axis("off")  # no sweep on this workload
        return
    for label, pts in swept.items():
        ax.plot([p[0] for p in pts], [p[1] * 1e3 for p in pts], marker="o", label=label)
    ax.set_title(f"{name}: mean TTFT (ms) against arrival rate", fontsize=9)
    ax.set_xlabel("requests / s")
    ax.grid(True, alpha=0.3)
    if swept:
        ax.legend(fontsize=7)
