"""What ``asymcache bench sweep`` writes: JSON rows and report, a Markdown table, and per
workload a PNG of TTFT and SLO attainment against rate with the TTFT CDFs at the knee."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from asymcache.ops.e2e.sweep import SweepResult, b_gap_sentence

COLUMNS = (("config", "config_id"), ("kind", "kind"), ("rate/s", "rate_per_s"),
           ("TTFT mean ms", "ttft_mean_s"), ("p90", "ttft_p90_s"), ("p99", "ttft_p99_s"),
           ("TPOT mean ms", "tpot_mean_s"), ("p90", "tpot_p90_s"), ("busy", "engine_busy_share"),
           ("SLO att.", "slo_attainment"), ("SLOs", "slo_met"), ("same", "outputs_identical"))
_MS = {"ttft_mean_s", "ttft_p90_s", "ttft_p99_s", "tpot_mean_s", "tpot_p90_s"}


def write_sweep(out_dir: Path, results: Sequence[SweepResult], meta: dict[str, object]
                ) -> list[Path]:
    """``sweep.json`` (rows), ``sweep-report.json``, ``sweep.md`` and a PNG per workload."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for res in results for r in res.rows]
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=1, default=float) + "\n")
    report = {"conditions": meta, "workloads": {res.name: res.summary() for res in results},
              "rows": rows}
    (out_dir / "sweep-report.json").write_text(json.dumps(report, indent=1, default=float)
                                               + "\n")
    (out_dir / "sweep.md").write_text(markdown(results, meta))
    pngs = []
    for res in results:
        png = out_dir / f"sweep-{res.name}.png"
        plot(res, png)
        pngs.append(png)
    return pngs


def table(rows: Sequence[dict[str, object]]) -> list[list[str]]:
    """The rows as strings (header first), sorted by configuration then rate."""
    out = [[h for h, _ in COLUMNS]]
    for r in sorted(rows, key=lambda r: (str(r["config_id"]), float(r["rate_per_s"]))):  # type: ignore[arg-type]
        out.append([_cell(k, r.get(k)) for _, k in COLUMNS])
    return out


def _cell(key: str, v: object) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if key in _MS and v is not None:
        return f"{float(v) * 1e3:.1f}"  # type: ignore[arg-type]
    if key in ("engine_busy_share", "slo_attainment") and v is not None:
        return f"{float(v):.0%}"  # type: ignore[arg-type]
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def markdown(results: Sequence[SweepResult], meta: dict[str, object]) -> str:
    out = ["# asymcache bench sweep", "", "Conditions:", ""]
    out += [f"- {k.replace('_', ' ')}: `{v}`" for k, v in meta.items()] + [""]
    for res in results:
        good = ", ".join(f"{k}: " + ("none" if v is None else f"{v:.3f}/s"
                                     + (" (at least)" if res.goodput_censored.get(k) else ""))
                         for k, v in res.goodput_rps.items())
        ratio = "n/a" if res.ttft_ratio_at_80pct_busy is None else (
            f"{res.ttft_ratio_at_80pct_busy:.2f}x (rounds "
            + ", ".join(f"{x:.2f}" for x in res.ttft_ratio_runs) + ")")
        rows = table(res.rows)
        out += [f"## {res.name}", "",
                f"Base rate {res.base_rate:.3f}/s (configuration 1 about 60% busy). SLOs: p90 "
                f"TTFT <= {res.ttft_slo_s * 1e3:.0f} ms, p90 TPOT <= {res.tpot_slo_s * 1e3:.1f} "
                f"ms. Knee of configuration 3: "
                + ("not reached" if res.knee_rate is None else f"{res.knee_rate:.3f}/s") + ".",
                "", f"Goodput: {good}.", "",
                "TTFT 3/4 at configuration 3's 80% busy rate "
                + ("(not reached)" if res.rate_at_80pct_busy is None
                   else f"({res.rate_at_80pct_busy:.3f}/s"
                   + (", extrapolated" if res.busy_rate_extrapolated else "") + ")")
                + f": {ratio}.", "",
                *_b_gap_line(res),
                "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
        out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
        if res.cut:
            out += ["", "Cut by the time budget: " + ", ".join(res.cut) + "."]
        out.append("")
    return "\n".join(out)


def _b_gap_line(res: SweepResult) -> list[str]:
    """The share of the 3 -> B gap that 4 closed at 80% busy, when B was swept."""
    if not res.b_gap:
        return []
    return [f"At that rate, the {b_gap_sentence(res.b_gap)}.", ""]


def plot(res: SweepResult, path: Path) -> None:
    """Mean and p90 TTFT, SLO attainment against rate, and TTFT CDFs at the knee."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    grid = [r for r in res.rows if r["kind"] in ("grid", "climb", "bisect")]
    for key in sorted({str(r["config_id"]) for r in grid}):
        mine = sorted((r for r in grid if r["config_id"] == key),
                      key=lambda r: float(r["rate_per_s"]))  # type: ignore[arg-type]
        rates = [float(r["rate_per_s"]) for r in mine]  # type: ignore[arg-type]
        line = axes[0].plot(rates, [float(r["ttft_p90_s"]) for r in mine], marker="o",  # type: ignore[arg-type]
                            label=f"{key} p90")[0]
        axes[0].plot(rates, [float(r["ttft_mean_s"]) for r in mine], ls="--",  # type: ignore[arg-type]
                     color=line.get_color(), label=f"{key} mean")
        axes[1].plot(rates, [float(r["slo_attainment"]) for r in mine], marker="o",  # type: ignore[arg-type]
                     color=line.get_color(), label=key)
    axes[0].axhline(res.ttft_slo_s, color="grey", lw=0.8, ls=":", label="TTFT SLO")
    axes[0].set(xlabel="arrival rate (requests/s)", ylabel="TTFT (s)", yscale="log",
                title=f"{res.name}: TTFT against rate")
    axes[1].set(xlabel="arrival rate (requests/s)", ylabel="share of requests meeting both SLOs",
                ylim=(0, 1.05), title="SLO attainment")
    for key, ttfts in sorted(res.cdf_at_knee.items()):
        xs = np.sort(np.asarray(ttfts))
        axes[2].plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=key)
    knee = "at the highest rate (no knee)" if res.knee_rate is None else \
        f"at the knee, {res.knee_rate:.3f}/s"
    axes[2].set(xlabel="TTFT (s)", ylabel="CDF", xscale="log", title=f"TTFT CDF {knee}")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
