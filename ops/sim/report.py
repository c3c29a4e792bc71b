"""Print, save and plot simulator rows: a table, a JSON file, a PNG."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

COLUMNS = (
    ("setup", "setup", "{}"),
    ("gpu", "gpu_frac", "{:.3%}"),
    ("policy", "policy", "{}"),
    ("reuse", "semantics", "{}"),
    ("ttft mean", "ttft_mean_s", "{:.4f}"),
    ("p50", "ttft_p50_s", "{:.3f}"),
    ("p90", "ttft_p90_s", "{:.3f}"),
    ("p99", "ttft_p99_s", "{:.3f}"),
    ("gpu hit", "gpu_hit_ratio", "{:.3f}"),
    ("cpu hit", "cpu_hit_ratio", "{:.3f}"),
    ("disk hit", "disk_hit_ratio", "{:.3f}"),
    ("recomp", "tokens_recomputed_share", "{:.3f}"),
    ("gap closed", "gap_closed", "{:.3f}"),
)


def format_table(rows: Sequence[dict[str, object]]) -> str:
    """A fixed-width text table of ``rows`` (columns absent from every row are left out)."""
    cols = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    cells = [[c[0] for c in cols]]
    for r in rows:
        cells.append([_cell(r, key, fmt) for _, key, fmt in cols])
    widths = [max(len(row[i]) for row in cells) for i in range(len(cols))]
    lines = ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict[str, object]]) -> str:
    """The same table in Markdown (for docs/policy.md)."""
    cols = [c for c in COLUMNS if any(c[1] in r for r in rows)]
    out = ["| " + " | ".join(c[0] for c in cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        out.append("| " + " | ".join(_cell(r, key, fmt) for _, key, fmt in cols) + " |")
    return "\n".join(out)


def _cell(row: dict[str, object], key: str, fmt: str) -> str:
    if key not in row:
        return ""
    value = row[key]
    if value is None:
        return "n/a"
    return fmt.format(value)


def write_json(rows: Sequence[dict[str, object]], path: str | Path) -> None:
    """Write the rows as a JSON list, one object per run (side effect: replaces ``path``)."""
    Path(path).write_text(json.dumps(list(rows), indent=1) + "\n")


def plot(rows: Sequence[dict[str, object]], path: str | Path, title: str) -> None:
    """TTFT against GPU capacity: one colour per policy, solid for msa and dashed for prefix
    reuse, one panel per tier set-up (side effect: writes the PNG at ``path``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    setups = list(dict.fromkeys(str(r["setup"]) for r in rows))
    policies = list(dict.fromkeys(str(r["policy"]) for r in rows))
    colours = plt.get_cmap("tab10" if len(policies) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(setups), figsize=(7 * len(setups), 4.5), squeeze=False)
    for ax, setup in zip(axes[0], setups, strict=True):
        for (policy, sem), pts in _lines(rows, setup).items():
            ax.plot([p[0] * 100 for p in pts], [p[1] for p in pts], marker="o",
                    color=colours(policies.index(policy) % colours.N),
                    linestyle="-" if sem == "msa" else "--", label=f"{policy} / {sem}")
        if len({float(r["gpu_frac"]) for r in rows}) > 1:  # type: ignore[arg-type]
            ax.set_xscale("log")
        ax.set_xlabel("GPU tier, % of unique blocks")
        ax.set_ylabel("mean TTFT (s, no queue)")
        ax.set_title(f"{title} — {setup}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _lines(rows: Sequence[dict[str, object]], setup: str) -> dict[tuple[str, str], list]:
    lines: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for r in rows:
        if r["setup"] == setup:
            lines.setdefault((str(r["policy"]), str(r["semantics"])), []).append(
                (float(r["gpu_frac"]), float(r["ttft_mean_s"])))  # type: ignore[arg-type]
    return {k: sorted(v) for k, v in lines.items()}
