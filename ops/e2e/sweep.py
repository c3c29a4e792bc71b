"""Rate sweeps with goodput: each configuration from light load to past configuration 3's knee.

Per workload (``asymcache bench sweep``, ``ops/bench/sweep.py``):

1. **Base rate**: a sample replayed back to back gives configuration 1's engine time per
   request; the base rate keeps it 60% busy (``calibrate.first_rate``).
2. **SLOs**: configuration 1 unloaded (a sample at a tenth of the base rate, so requests rarely
   meet) gives the mean TTFT and TPOT; each SLO is ``slo_factor`` (5) times that, unless given.
   A run meets them when its p90 TTFT and its p90 per-request TPOT are both under.
3. **Grid**: every configuration at ``base × factor`` for the factors in ascending order
   (configuration 1 first at each rate; its tokens of the first run are the reference every
   run is compared with, request by request). A configuration that missed the SLOs at a rate is
   not run at higher rates (a loaded engine only gets slower); the grid grows by ×1.5 past its
   last factor until configuration 3 (else the slowest cached configuration) missed them, and
   stops one rate after that: its knee.
4. **Goodput**: per configuration, the highest rate that meets both SLOs, found by bisection
   (geometric midpoints) between the highest grid rate that met them and the lowest that did
   not, until the two are within ``tolerance`` (5%). A configuration that met them at every
   grid rate (the grid stops at configuration 3's knee) first *climbs*: ×1.5 at a time, up to
   ``max_factor`` × the base rate, until it misses them. ``None`` when no rate met them;
   ``goodput_censored`` when every rate tried met them (the goodput is at least that).
5. **At 80% busy**: configuration 3's busy share against rate (its grid and bisection runs),
   interpolated to 80% (extrapolated from its two highest rates when it missed the SLOs, and
   so stopped, below 80%: ``rate_at_80pct_busy_extrapolated``); there
   configurations 3 and 4 (and B, when swept) run again in ``rounds`` interleaved rounds, and
   the median of the rounds' mean-TTFT ratios 3/4 is ``ttft_ratio_at_80pct_busy`` (where papers
   take headlines); with B, ``b_gap_closed`` is the median share of the 3 -> B gap that 4
   closes there (``experiment.b_gap_rounds``: null where 3/B is under 1.2).

Configuration B's daemon is handed the replayed future with a lag (``oracle.py``) taken from
configuration 1's latencies at the same rate; at a rate configuration 1 did not run (it had
missed the SLOs below it), from its run at the nearest rate above, else its highest (logged;
before the 80%-busy rounds configuration 1 runs once at that rate if it ran at none as high,
so B's lag there is measured, not borrowed from a lighter load). Each B row says where its
lag came from (``oracle_lag_from_rate``) and whether a request of B outlasted it
(``oracle_lag_short``: B then forgot a pending use, which makes it a weaker bound).

``budget_s`` bounds the whole sweep's wall time: past it, no new grid rate or bisection step
starts (the JSON says which were cut). Rows are ``summary.summarize`` rows plus the sweep's
fields (``kind`` = ``grid``, ``climb``, ``bisect``, ``busy80`` or ``unloaded``).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from asymcache.ops.e2e.calibrate import Progress, first_rate
from asymcache.ops.e2e.configs import BenchConfig, Capacities
from asymcache.ops.e2e.experiment import B_GAP_MIN, Plan, b_gap_rounds, capacities
from asymcache.ops.e2e.oracle import oracle_lag
from asymcache.ops.e2e.runner import ConfigRun, RunSetup, run_config
from asymcache.ops.e2e.sources import SourceSpec, build
from asymcache.ops.e2e.summary import Mismatch, compare_outputs, summarize
from asymcache.ops.e2e.workload import Workload

BUSY_AT_BASE = 0.6
UNLOADED_SHARE = 0.1  # the unloaded sample runs at this share of the base rate
BUSY_HEADLINE = 0.8
CLIMB = 1.5  # past the highest rate a configuration met, try this much more (goodput)


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep does (``asymcache bench sweep --help`` explains each knob)."""

    configs: tuple[BenchConfig, ...]  # configuration 1 first
    source: SourceSpec
    factors: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
    max_factor: float = 12.0
    ttft_slo_s: float | None = None
    tpot_slo_s: float | None = None
    slo_factor: float = 5.0
    tolerance: float = 1.05
    rounds: int = 3
    calib_sample: int = 24
    unloaded_sample: int = 12
    fractions: tuple[float, float, float] = (0.1, 0.2, 0.4)
    gpu_min_contexts: float = 2.0
    cpu_threads: int = 1
    target_step_s: float = 0.04
    signals: bool = True
    budget_s: float = 4 * 3600.0

    def __post_init__(self) -> None:
        if not self.configs or self.configs[0].key != "1":
            raise ValueError("the sweep needs configuration 1 first (the reference outputs)")
        if not self.factors or any(f <= 0 for f in self.factors):
            raise ValueError(f"factors must be positive, got {self.factors}")
        if self.tolerance <= 1.0:
            raise ValueError(f"tolerance must be > 1 (a rate ratio), got {self.tolerance}")
        for name in ("ttft_slo_s", "tpot_slo_s"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if self.slo_factor <= 1 or self.rounds < 1:
            raise ValueError("slo_factor must be > 1 and rounds >= 1")


@dataclass
class SweepResult:
    """One workload's sweep: its rows, SLOs, goodputs and the headline ratio."""

    name: str
    rows: list[dict[str, object]] = field(default_factory=list)
    mismatches: list[Mismatch] = field(default_factory=list)
    capacities: Capacities | None = None
    base_rate: float = 0.0
    ttft_slo_s: float = 0.0
    tpot_slo_s: float = 0.0
    goodput_rps: dict[str, float | None] = field(default_factory=dict)
    goodput_censored: dict[str, bool] = field(default_factory=dict)
    knee_rate: float | None = None
    rate_at_80pct_busy: float | None = None
    busy_rate_extrapolated: bool = False  # configuration 3 stopped below 80% busy
    ttft_ratio_at_80pct_busy: float | None = None
    ttft_ratio_runs: list[float] = field(default_factory=list)
    b_gap: dict[str, object] = field(default_factory=dict)  # b_gap_rounds at 80% busy
    cdf_at_knee: dict[str, list[float]] = field(default_factory=dict)  # config -> TTFTs
    cut: list[str] = field(default_factory=list)  # what the budget stopped

    def summary(self) -> dict[str, object]:
        return {"workload": self.name, "base_rate_per_s": self.base_rate,
                "ttft_slo_s": self.ttft_slo_s, "tpot_slo_s": self.tpot_slo_s,
                "goodput_rps": self.goodput_rps, "goodput_censored": self.goodput_censored,
                "knee_rate_per_s": self.knee_rate, "rate_at_80pct_busy": self.rate_at_80pct_busy,
                "rate_at_80pct_busy_extrapolated": self.busy_rate_extrapolated,
                "ttft_ratio_at_80pct_busy": self.ttft_ratio_at_80pct_busy,
                "ttft_ratio_at_80pct_busy_runs": self.ttft_ratio_runs,
                "b_gap_closed": self.b_gap.get("b_gap_closed"),
                "b_gap_closed_runs": self.b_gap.get("b_gap_closed_runs", []),
                "ttft_ratio_vs_belady_runs": self.b_gap.get("ttft_ratio_vs_belady_runs", []),
                "capacities": self.capacities.to_dict() if self.capacities else None,
                "cut_by_budget": self.cut}


class _Sweep:
    """The state of one workload's sweep (see the module doc)."""

    def __init__(self, name: str, plan: SweepPlan, profile: str, block_bytes: int,
                 progress: Progress, log: Callable[[str], None]) -> None:
        self.plan, self.progress, self.log = plan, progress, log
        self.base = build(name, plan.source)
        e2e_plan = Plan(configs=plan.configs, source=plan.source, fractions=plan.fractions,
                        gpu_min_contexts=plan.gpu_min_contexts)
        caps = capacities(self.base, e2e_plan, block_bytes)
        self.setup = RunSetup(caps, profile, cpu_threads=plan.cpu_threads,
                              target_step_s=plan.target_step_s, signals=plan.signals)
        self.result = SweepResult(self.base.name, capacities=caps)
        self.reference: dict[str, list[int]] | None = None
        self.started = time.monotonic()
        self.met: dict[str, dict[float, bool]] = {c.key: {} for c in plan.configs}
        self.lags: dict[float, float] = {}  # rate -> B's oracle lag from configuration 1 there

    # ---- steps ----------------------------------------------------------------------------
    def run(self) -> SweepResult:
        plan, res = self.plan, self.result
        rate, _ = first_rate(self.base, self.setup, BUSY_AT_BASE, plan.calib_sample, self.log)
        res.base_rate = rate
        self._slos(rate)
        self._grid(rate)
        if res.knee_rate is None:  # the CDFs at the highest rate tried instead
            tried = [float(r["rate_per_s"]) for r in res.rows if r["kind"] == "grid"]  # type: ignore[arg-type]
            if tried:
                self._knee_cdf(max(tried))
        for cfg in plan.configs:
            self._goodput(cfg)
        self._busy80()
        for row in res.rows:
            row["goodput_rps"] = res.goodput_rps.get(str(row["config_id"]))
        return res

    def _slos(self, rate: float) -> None:
        plan, res = self.plan, self.result
        sample = self.base.spread_sample(plan.unloaded_sample)
        w = sample.at_rate(rate * UNLOADED_SHARE)
        run = self._run(plan.configs[0], w, "unloaded")
        outcomes = run.replay.outcomes
        self.lags[w.rate] = oracle_lag(outcomes)
        ttft = float(np.mean([o.ttft for o in outcomes]))
        tpot = float(np.mean([t for o in outcomes if (t := o.tpot) is not None] or [0.0]))
        res.ttft_slo_s = plan.ttft_slo_s or plan.slo_factor * ttft
        res.tpot_slo_s = plan.tpot_slo_s or plan.slo_factor * max(tpot, 1e-6)
        self.log(f"[{res.name}] unloaded: TTFT {ttft * 1e3:.1f} ms, TPOT {tpot * 1e3:.2f} ms -> "
                 f"SLOs p90 TTFT <= {res.ttft_slo_s * 1e3:.0f} ms, p90 TPOT <= "
                 f"{res.tpot_slo_s * 1e3:.1f} ms")

    def _grid(self, base_rate: float) -> None:
        plan, res = self.plan, self.result
        knee_key = "3" if any(c.key == "3" for c in plan.configs) else plan.configs[-1].key
        factors, past_knee = list(plan.factors), None
        i = 0
        while i < len(factors):
            if self._over_budget(f"grid x{factors[i]:g}"):
                return
            rate = base_rate * factors[i]
            for cfg in plan.configs:
                if self._failed_below(cfg.key, rate):
                    continue
                self._measure(cfg, rate, "grid", factors[i])
            if past_knee is None and self.met[knee_key].get(rate) is False:
                past_knee, res.knee_rate = rate, rate
                self._knee_cdf(rate)
            elif past_knee is not None:
                return  # one rate past the knee
            if i == len(factors) - 1 and past_knee is None and factors[i] * 1.5 <= plan.max_factor:
                factors.append(factors[i] * 1.5)
            i += 1

    def _goodput(self, cfg: BenchConfig) -> None:
        res, met = self.result, self.met[cfg.key]
        good = [r for r, ok in met.items() if ok]
        lo = max(good) if good else None
        bad = [r for r, ok in met.items() if not ok and (lo is None or r > lo)]
        hi = min(bad) if bad else None
        top = self.plan.max_factor * res.base_rate
        while lo is not None and hi is None and lo * CLIMB <= top * (1 + 1e-9):
            # it met the SLOs at every rate tried (the grid stopped at 3's knee): climb on
            if self._over_budget(f"climb of {cfg.key}"):
                break
            rate = lo * CLIMB
            if self._measure(cfg, rate, "climb", rate / res.base_rate):
                lo = rate
            else:
                hi = rate
        res.goodput_censored[cfg.key] = lo is not None and hi is None
        while lo is not None and hi is not None and hi / lo > self.plan.tolerance:
            if self._over_budget(f"bisection of {cfg.key}"):
                break
            mid = math.sqrt(lo * hi)
            if self._measure(cfg, mid, "bisect", mid / res.base_rate):
                lo = mid
            else:
                hi = mid
        res.goodput_rps[cfg.key] = lo
        self.log(f"[{res.name}] goodput {cfg.key} {cfg.name}: "
                 + ("none" if lo is None else f"{lo:.3f} requests/s")
                 + (" (every rate tried met the SLOs)" if res.goodput_censored[cfg.key] else ""))

    def _busy80(self) -> None:
        plan, res = self.plan, self.result
        by = {c.key: c for c in plan.configs}
        if "3" not in by or "4" not in by:
            return
        points = sorted((float(r["rate_per_s"]), float(r["engine_busy_share"]))  # type: ignore[arg-type]
                        for r in res.rows if r["config_id"] == "3"
                        and r["kind"] in ("grid", "climb", "bisect"))
        rate = busy_rate(points, BUSY_HEADLINE)
        if rate is None:  # it missed the SLOs (and so stopped) below 80% busy
            rate = extrapolated_busy_rate(points, BUSY_HEADLINE)
            res.busy_rate_extrapolated = rate is not None
            if rate is not None:
                self.log(f"[{res.name}] configuration 3 stopped below 80% busy; its last two "
                         f"rates put 80% at {rate:.3f}/s")
        res.rate_at_80pct_busy = rate
        if rate is None:
            self.log(f"[{res.name}] configuration 3 never reached 80% busy on the grid")
            return
        keys = ("3", "4", "B") if "B" in by else ("3", "4")
        if "B" in by and not any(r >= rate for r in self.lags) \
                and not self._over_budget("configuration 1 at 80% busy (B's lag)"):
            self._measure(by["1"], rate, "busy80", rate / res.base_rate)  # B's lag at this rate
        rounds: dict[int, dict[str, dict[str, object]]] = {}
        for round_ in range(plan.rounds):
            if self._over_budget(f"80% busy round {round_}"):
                break
            for key in keys:
                self._measure(by[key], rate, "busy80", rate / res.base_rate, round_)
            rows = rounds[round_] = {str(r["config_id"]): r for r in res.rows
                                     if r["kind"] == "busy80" and r["repeat"] == round_}
            res.ttft_ratio_runs.append(float(rows["3"]["ttft_mean_s"])  # type: ignore[arg-type]
                                       / float(rows["4"]["ttft_mean_s"]))  # type: ignore[arg-type]
        if "B" in by and rounds:
            res.b_gap = b_gap_rounds(rounds)
            self.log(f"[{res.name}] at 80% busy: {b_gap_sentence(res.b_gap)}")
        if res.ttft_ratio_runs:
            res.ttft_ratio_at_80pct_busy = statistics.median(res.ttft_ratio_runs)
            self.log(f"[{res.name}] at 80% busy ({rate:.3f}/s): TTFT 3/4 "
                     f"{res.ttft_ratio_at_80pct_busy:.2f}x (rounds: "
                     f"{', '.join(f'{x:.2f}' for x in res.ttft_ratio_runs)})")

    # ---- one run --------------------------------------------------------------------------
    def _measure(self, cfg: BenchConfig, rate: float, kind: str, factor: float,
                 round_: int = 0) -> bool:
        """Run ``cfg`` at ``rate``; record its row; whether it met both SLOs."""
        res = self.result
        run = self._run(cfg, self.base.at_rate(rate), kind)
        outcomes = run.replay.outcomes
        if cfg.key == "1":
            self.lags[rate] = oracle_lag(outcomes)
        if self.reference is None:
            self.reference = {o.request_id: o.token_ids for o in outcomes}
        bad = compare_outputs(cfg.name, self.reference, outcomes)
        res.mismatches += bad
        row = {"workload": res.name, "kind": kind, "repeat": round_, "rate_per_s": rate,
               "rate_factor": factor,
               **summarize(run, bad, self.base.block_size,
                           {r.request_id: r.session for r in self.base.requests})}
        row.update(slo_figures(outcomes, res.ttft_slo_s, res.tpot_slo_s))
        if cfg.oracle:
            longest = max(o.token_times[-1] - o.due for o in outcomes)
            row.update(oracle_lag_s=run.oracle_lag_s, oracle_lag_from_rate=self.lag_rate(rate),
                       oracle_lag_short=longest > float(run.oracle_lag_s or 0.0))
            if row["oracle_lag_short"]:
                self.log(f"  B at {rate:.3f}/s: a request took {longest:.1f} s, longer than its "
                         f"oracle's lag {run.oracle_lag_s:.1f} s (a weaker bound there)")
        res.rows.append(row)
        ok = bool(row["slo_met"])
        self.met[cfg.key][rate] = ok
        self.log(f"  {res.name} {kind} {rate:.3f}/s {cfg.key} {cfg.name}: TTFT p90 "
                 f"{float(row['ttft_p90_s']) * 1e3:.0f} ms, TPOT p90 "  # type: ignore[arg-type]
                 f"{float(row['tpot_p90_s']) * 1e3:.1f} ms, busy "  # type: ignore[arg-type]
                 f"{float(row['engine_busy_share']):.0%}, SLOs "  # type: ignore[arg-type]
                 f"{'met' if ok else 'missed'}, identical {row['outputs_identical']}")
        return ok

    def _run(self, cfg: BenchConfig, w: Workload, kind: str) -> ConfigRun:
        label = f"{w.name} {kind} {w.rate:.3f}/s {cfg.key} {cfg.name}"
        setup = self.setup
        if cfg.oracle:
            source = self.lag_rate(w.rate)
            if source < w.rate:
                self.log(f"  B at {w.rate:.3f}/s: configuration 1 ran up to {source:.3f}/s "
                         f"only; its lag there ({self.lags[source]:.1f} s) stands in")
            setup = dataclasses.replace(setup, oracle_lag_s=self.lags[source])
        return run_config(cfg, w, setup, on_done=self.progress(label, len(w)))

    def lag_rate(self, rate: float) -> float:
        """The rate of the configuration-1 run whose latencies give B's oracle lag at ``rate``:
        ``rate`` itself, else the nearest above, else the highest (see the module doc)."""
        if not self.lags:
            raise RuntimeError("configuration 1 has not run yet: B's oracle has no lag")
        above = [r for r in self.lags if r >= rate]
        return min(above) if above else max(self.lags)

    def _knee_cdf(self, rate: float) -> None:
        for r in self.result.rows:
            if r["kind"] == "grid" and r["rate_per_s"] == rate:
                self.result.cdf_at_knee[str(r["config_id"])] = list(r["ttfts"])  # type: ignore[call-overload]

    def _failed_below(self, key: str, rate: float) -> bool:
        return any(not ok and r < rate for r, ok in self.met[key].items())

    def _over_budget(self, what: str) -> bool:
        if time.monotonic() - self.started <= self.plan.budget_s:
            return False
        self.result.cut.append(what)
        self.log(f"[{self.result.name}] budget of {self.plan.budget_s:.0f} s spent: {what} not run")
        return True


def run_sweep(name: str, plan: SweepPlan, profile: str, block_bytes: int, progress: Progress,
              log: Callable[[str], None] = print) -> SweepResult:
    """The whole sweep of workload ``name`` (side effects: daemon processes, log lines)."""
    return _Sweep(name, plan, profile, block_bytes, progress, log).run()


def b_gap_sentence(b_gap: dict[str, object]) -> str:
    """The share of the 3 -> B gap that 4 closed, with each round's 3/B (for logs and
    sweep.md)."""
    closed = b_gap.get("b_gap_closed")
    ratios = ", ".join(f"{x:.2f}" for x in b_gap.get("ttft_ratio_vs_belady_runs", []))  # type: ignore[attr-defined]
    share = f"n/a (3/B under {B_GAP_MIN:g}x)" if closed is None else f"{closed:.2f}"
    return f"share of the 3 -> B gap closed by 4 {share} (3/B rounds: {ratios})"


def slo_figures(outcomes: Sequence, ttft_slo_s: float, tpot_slo_s: float) -> dict[str, object]:
    """p90 TTFT and per-request TPOT, whether both are under their SLOs, the share of requests
    that met both, and every TTFT (for CDFs)."""
    ttft = np.array([o.ttft for o in outcomes])
    tpot = np.array([o.tpot if o.tpot is not None else 0.0 for o in outcomes])
    p90_ttft, p90_tpot = float(np.percentile(ttft, 90)), float(np.percentile(tpot, 90))
    each = (ttft <= ttft_slo_s) & (tpot <= tpot_slo_s)
    return {"tpot_p90_s": p90_tpot, "slo_met": p90_ttft <= ttft_slo_s and p90_tpot <= tpot_slo_s,
            "slo_attainment": float(each.mean()), "ttfts": [float(x) for x in ttft]}


def extrapolated_busy_rate(points: Sequence[tuple[float, float]], target: float,
                           reach: float = 1.5) -> float | None:
    """Where the busy share would reach ``target`` on the line through the two highest rates
    of ``points`` (sorted by rate; every share below ``target``): the local slope, since busy
    time per request grows with load. None with fewer than two points, a slope that does not
    rise, or a rate past ``reach`` times the highest tried (too far to trust)."""
    if len(points) < 2:
        return None
    (r0, b0), (r1, b1) = points[-2], points[-1]
    if b1 <= b0 or r1 <= r0:
        return None
    rate = r1 + (target - b1) * (r1 - r0) / (b1 - b0)
    return rate if rate <= reach * r1 else None


def busy_rate(points: Sequence[tuple[float, float]], target: float) -> float | None:
    """The rate at which the busy share reaches ``target``, linearly between the two points
    around it (``points``: ``(rate, busy share)`` sorted by rate); None if no point reached
    it."""
    for (r0, b0), (r1, b1) in itertools.pairwise(points):
        if b0 < target <= b1:
            return r0 + (target - b0) * (r1 - r0) / (b1 - b0)
    if points and points[0][1] >= target:
        return points[0][0]
    return None
