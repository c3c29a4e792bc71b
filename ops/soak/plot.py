"""The soak's PNG: request latency over time with the faults marked, and the daemon's RSS (and
its anonymous and file-backed parts), file descriptors and threads below (a gap where the
daemon was down, a step at each restart).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from asymcache.ops.soak.load import Record
from asymcache.ops.soak.monitor import Sample


def plot(path: Path, records: Sequence[Record], samples: Sequence[Sample],
         faults: Sequence[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(12, 7), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 2]})
    for tenant, color in ((0, "tab:blue"), (1, "tab:green")):
        ok = [r for r in records if r.ok and r.tenant == tenant]
        top.scatter([r.t_done for r in ok], [r.t_done - r.t_send for r in ok], s=3,
                    color=color, alpha=0.5, label=f"tenant {tenant}")
    bad = [r for r in records if not r.ok or r.differ or r.cross]
    if bad:
        top.scatter([r.t_done for r in bad], [r.t_done - r.t_send for r in bad], s=25,
                    marker="x", color="red", label="failed / differ / cross-tenant")
    top.set_yscale("log")
    top.set_ylabel("request latency (s)")
    for f in faults:
        color = "tab:green" if f.get("recovered") else "red"
        for ax in (top, bottom):
            ax.axvline(f["at_s"], color=color, linestyle="--", linewidth=0.8)
        top.annotate(f["kind"], (f["at_s"], 1.0), xycoords=("data", "axes fraction"),
                     rotation=90, va="top", ha="right", fontsize=7)
    top.legend(loc="lower right", fontsize=7)
    t = [s.t_s for s in samples]
    for name, color, label in (("rss_bytes", "tab:purple", "daemon RSS"),
                               ("rss_anon", "tab:red", "of which anonymous"),
                               ("rss_file", "tab:brown", "of which file-backed")):
        bottom.plot(t, [getattr(s, name) / 2**20 for s in samples], ".", markersize=2,
                    color=color, label=label)
    bottom.set_ylabel("MiB")
    bottom.legend(loc="lower left", fontsize=7)
    twin = bottom.twinx()
    twin.plot(t, [s.fds for s in samples], ".", markersize=2, color="tab:orange", label="fds")
    twin.plot(t, [s.threads for s in samples], ".", markersize=2, color="tab:gray",
              label="threads")
    twin.set_ylabel("fds, threads")
    twin.legend(loc="lower right", fontsize=7)
    bottom.set_xlabel("seconds since the load started")
    fig.suptitle("asymcache soak: latency with faults (dashed: green recovered, red not)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
