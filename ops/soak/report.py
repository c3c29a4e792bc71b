"""The soak's summary (the JSON scripts read), its verdict and its table.

Keys scripts rely on: ``requests``, ``failed_requests``, ``outputs_differ``,
``cross_tenant_hits``, ``rss_growth_pct`` and ``faults`` (each with ``kind``, ``at_s``,
``recovered``, ``recovery_s``).

* ``failed_requests`` counts failures OUTSIDE the window of an engine's own kill (from the
  moment it stops getting requests to the moment it gets them again); those inside are
  ``expected_failures``.
* Memory is compared like for like: within one daemon lifetime (a restart starts a new process
  with a new baseline), from the first sample after ``warmup_s`` of that lifetime to its last.
  The figures reported at top level (``rss_growth_pct``, ``rss_anon_growth_pct``: the heap
  alone, without LMDB's file-backed pages; ``fds_growth``, ``threads_growth``) are those of
  the LAST lifetime (from the last restart to the end: the longest stretch
  without faults that restart the daemon), or of the longest one measured if the last is too
  short; every lifetime's are under ``memory.lifetimes``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from asymcache.ops.soak.config import SoakConfig
from asymcache.ops.soak.load import Record
from asymcache.ops.soak.monitor import Sample

MIN_SPAN_S = 20.0  # a lifetime measured for less than this after its warm-up is not reported


def expected(rec: Record, windows: Sequence[tuple[int, float, float]]) -> bool:
    """A failed request in flight at an engine while that engine was being killed."""
    return any(rec.engine == e and rec.t_send <= b and rec.t_done >= a for e, a, b in windows)


def kill_windows(faults: Sequence[dict], end_s: float) -> list[tuple[int, float, float]]:
    out = []
    for f in faults:
        if f.get("kind") == "engine_kill" and f.get("window"):
            a, b = f["window"]
            out.append((f["engine"], a, end_s if b is None else b))
    return out


def lifetime_growth(samples: Sequence[Sample], warmup_s: float, start_s: float) -> dict | None:
    """Growth within one lifetime after its warm-up (None if too short to say)."""
    warm = [s for s in samples if s.t_s >= start_s + warmup_s]
    if len(warm) < 2 or warm[-1].t_s - warm[0].t_s < MIN_SPAN_S:
        return None
    a, b = warm[0], warm[-1]
    return {"from_s": round(a.t_s, 1), "to_s": round(b.t_s, 1),
            "rss_mib": [round(a.rss_bytes / 2**20, 2), round(b.rss_bytes / 2**20, 2)],
            "rss_growth_pct": round(100.0 * (b.rss_bytes - a.rss_bytes) / a.rss_bytes, 2),
            "rss_anon_growth_pct": round(100.0 * (b.rss_anon - a.rss_anon) / max(1, a.rss_anon),
                                         2),
            "rss_parts_mib": {k: [round(getattr(a, k) / 2**20, 2), round(getattr(b, k) / 2**20, 2)]
                              for k in ("rss_anon", "rss_file", "rss_shmem")},
            "fds": [a.fds, b.fds], "fds_growth": b.fds - a.fds,
            "fds_growth_pct": round(100.0 * (b.fds - a.fds) / a.fds, 2),
            "threads": [a.threads, b.threads], "threads_growth": b.threads - a.threads,
            "threads_growth_pct": round(100.0 * (b.threads - a.threads) / a.threads, 2)}


def memory(samples: Sequence[Sample], starts_s: Sequence[float], warmup_s: float) -> dict:
    lifetimes = []
    for i, start in enumerate(starts_s):
        got = lifetime_growth([s for s in samples if s.lifetime == i], warmup_s, start)
        lifetimes.append({"lifetime": i, "started_s": round(start, 1),
                          **(got or {"measured": False})})
    measured = [lt for lt in lifetimes if "rss_growth_pct" in lt]
    pick = None
    if measured:
        last = lifetimes[-1]
        pick = last if "rss_growth_pct" in last else max(
            measured, key=lambda lt: lt["to_s"] - lt["from_s"])
    return {"warmup_s": warmup_s, "measured_lifetime": None if pick is None else
            pick["lifetime"], "lifetimes": lifetimes, "pick": pick}


def sample_rows(samples: Sequence[Sample]) -> dict:
    """Every daemon sample, compactly: ``columns`` and one row per sample."""
    mib = 2**20
    return {"columns": ["t_s", "lifetime", "rss_mib", "anon_mib", "file_mib", "fds", "threads"],
            "rows": [[round(m.t_s, 1), m.lifetime, round(m.rss_bytes / mib, 2),
                      round(m.rss_anon / mib, 2), round(m.rss_file / mib, 2), m.fds, m.threads]
                     for m in samples]}


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    v = sorted(values)

    def at(q: float) -> float:
        return v[min(len(v) - 1, int(q * len(v)))]

    return {"p50": round(statistics.median(v), 3), "p90": round(at(0.9), 3),
            "p99": round(at(0.99), 3), "max": round(v[-1], 3)}


def summarize(cfg: SoakConfig, records: Sequence[Record], faults: list[dict],
              samples: Sequence[Sample], starts_s: Sequence[float], extra: dict) -> dict:
    end = max((r.t_done for r in records), default=0.0)
    windows = kill_windows(faults, end)
    failed = [r for r in records if not r.ok]
    expected_n = sum(expected(r, windows) for r in failed)
    ok = [r for r in records if r.ok]
    mem = memory(samples, starts_s, cfg.warmup_s)
    pick = mem.pop("pick") or {}
    prompt_tokens = sum(r.n_prompt for r in ok)
    out = {
        "requests": len(records), "ok_requests": len(ok),
        "failed_requests": len(failed) - expected_n, "expected_failures": expected_n,
        "outputs_differ": sum(r.differ for r in records),
        "cross_tenant_hits": sum(r.cross for r in records),
        "leak_opportunities": sum(r.other > r.own for r in ok),
        "rss_growth_pct": pick.get("rss_growth_pct"),
        "rss_anon_growth_pct": pick.get("rss_anon_growth_pct"),
        "fds_growth": pick.get("fds_growth"), "fds_growth_pct": pick.get("fds_growth_pct"),
        "threads_growth": pick.get("threads_growth"),
        "threads_growth_pct": pick.get("threads_growth_pct"),
        "faults": faults,
        "duration_s": round(end, 1), "minutes": cfg.minutes,
        "requests_per_s": round(len(records) / end, 2) if end else 0.0,
        "cached_token_share": round(sum(r.cached for r in ok) / prompt_tokens, 4)
        if prompt_tokens else 0.0,
        "latency_s": _percentiles([r.t_done - r.t_send for r in ok]),
        "memory": mem, **extra}
    out["checks"] = checks(cfg, out)
    out["passed"] = all(out["checks"].values())
    return out


def checks(cfg: SoakConfig, s: dict) -> dict[str, bool]:
    lim = cfg.limits.growth_pct
    grown = [s[k] for k in ("rss_growth_pct", "fds_growth_pct", "threads_growth_pct")]
    return {"outputs_identical": s["outputs_differ"] == 0,
            "no_cross_tenant_hits": s["cross_tenant_hits"] == 0,
            "no_unexpected_failures": s["failed_requests"] == 0,
            "every_fault_recovered": all(f["recovered"] for f in s["faults"]),
            "daemon_flat_after_warmup": all(g is not None and g <= lim for g in grown)}


def table(s: dict) -> str:
    """The printed summary: the run's figures, then one row per fault."""
    lat = s.get("latency_s", {})
    lines = [
        f"soak: {s['duration_s']:.0f} s, {s['engines']} engines, {s['clients']} clients, "
        f"remote tier {'on' if s['remote'] else 'OFF'}",
        f"requests {s['requests']} ({s['requests_per_s']}/s), failed {s['failed_requests']} "
        f"(+{s['expected_failures']} expected, in engine-kill windows)",
        f"outputs differ {s['outputs_differ']}, cross-tenant hits {s['cross_tenant_hits']} "
        f"(of {s['leak_opportunities']} requests where a leak would show), cached tokens "
        f"{100 * s['cached_token_share']:.1f}%",
        f"latency p50 {lat.get('p50', 0)} s, p99 {lat.get('p99', 0)} s, max {lat.get('max', 0)} s",
        f"daemon after warm-up (lifetime {s['memory']['measured_lifetime']}): RSS "
        f"{_fmt(s['rss_growth_pct'], '%')} (anonymous {_fmt(s['rss_anon_growth_pct'], '%')}), "
        f"fds {_fmt(s['fds_growth'])}, threads {_fmt(s['threads_growth'])}", ""]
    rows = [("fault", "at_s", "recovered", "recovery_s", "notes")]
    for f in s["faults"]:
        rows.append((f["kind"], f"{f['at_s']:.1f}", "yes" if f["recovered"] else "NO",
                     _fmt(f.get("recovery_s")), _notes(f)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines += ["  ".join([c.ljust(w) for c, w in zip(r[:4], widths, strict=True)] + [r[4]])
              for r in rows]
    for kind, why in s.get("skipped_faults", {}).items():
        lines.append(f"{kind}: SKIPPED ({why})")
    lines += ["", "checks: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}"
                                         for k, v in s["checks"].items())]
    return "\n".join(lines)


_NOTE_KEYS = ("serving_s", "engines_back_s", "engine", "node", "healthy_s", "detected_by",
              "get_returned", "write_errors_counted", "damaged_file_counted",
              "burst_in_flight_at_restart", "error")


def _notes(f: dict) -> str:
    return " ".join(f"{k}={f[k]}" for k in _NOTE_KEYS if f.get(k) not in (None, ""))[:160]


def _fmt(v: object, unit: str = "") -> str:
    if v is None:
        return "-"
    return f"{v:+g}{unit}" if unit else (f"{v:.2f}" if isinstance(v, float) else str(v))
