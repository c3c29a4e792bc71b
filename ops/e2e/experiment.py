"""One workload end to end: build it, size the tiers, calibrate the load, run every
configuration at that load (and optionally at other rates), check outputs, predict, summarize.

Configuration 1 (no cache) always runs first at each rate: its greedy tokens are the reference
every other configuration is compared with, request by request.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asymcache.ops.e2e.calibrate import Calibration, Progress, calibrated, first_rate
from asymcache.ops.e2e.configs import BenchConfig, Capacities
from asymcache.ops.e2e.oracle import oracle_lag
from asymcache.ops.e2e.predict import H100, H100_PRESET, LOCAL, predict
from asymcache.ops.e2e.runner import ConfigRun, RunSetup, run_config
from asymcache.ops.e2e.sources import SourceSpec, build
from asymcache.ops.e2e.summary import Mismatch, compare_outputs, summarize
from asymcache.ops.e2e.workload import Workload

TTFT_GOAL, TPOT_GOAL, TTFT_SLACK = 2.0, 1.6, 1.05
B_GAP_MIN, B_GAP_GOAL = 1.2, 0.6  # a 3 -> B gap worth closing; the share 4 should close


@dataclass(frozen=True)
class Plan:
    """What a run does (see ``asymcache bench e2e --help`` for each knob)."""

    configs: tuple[BenchConfig, ...]
    source: SourceSpec
    fractions: tuple[float, float, float] = (0.1, 0.2, 0.4)
    gpu_min_contexts: float = 2.0
    target_busy: float = 0.6
    rate: float | None = None
    calib_sample: int = 40
    calib_rounds: int = 2
    calib_tolerance: float = 0.07
    sweep: tuple[float, ...] = ()
    sweep_configs: tuple[str, ...] = ("1", "3", "4", "5c")
    sweep_workloads: tuple[str, ...] = ("chat",)
    repeats: int = 1
    repeat_configs: tuple[str, ...] = ("1", "3", "4", "5c", "P", "B")
    target_step_s: float = 0.04
    cpu_threads: int = 1
    lookup_mirror: bool = True
    signals: bool = True  # clients' session, retention and end signals (docs/policy.md)


@dataclass
class WorkloadResult:
    """Rows of one workload (headline first, then sweep), its mismatches, sizes and goals."""

    name: str
    rows: list[dict[str, object]]
    mismatches: list[Mismatch]
    capacities: Capacities
    calibration: Calibration | None
    goals: dict[str, object] = field(default_factory=dict)
    description: str = ""



def run_workload(name: str, plan: Plan, profile: str, block_bytes: int, progress: Progress,
                 log: Callable[[str], None] = print) -> WorkloadResult:
    """Everything for workload ``name`` (side effects: daemon processes, log lines)."""
    base = build(name, plan.source)
    caps = capacities(base, plan, block_bytes)
    setup = RunSetup(caps, profile, cpu_threads=plan.cpu_threads,
                     target_step_s=plan.target_step_s, lookup_mirror=plan.lookup_mirror,
                     signals=plan.signals)
    raised = f", raised to hold {plan.gpu_min_contexts:g} longest contexts" \
        if caps.gpu_raised else ""
    log(f"[{base.name}] {len(base)} requests, {caps.unique_blocks} unique blocks; tiers gpu "
        f"{caps.gpu_blocks} ({caps.frac('gpu'):.1%}{raised}), cpu {caps.cpu_blocks}, disk "
        f"{caps.disk_blocks} blocks")
    reference, calib = _reference(base, plan, setup, progress, log)
    rate = calib.rate
    result = WorkloadResult(base.name, [], [], caps, calib, description=base.description)
    head = _run_rate(base.at_rate(rate), plan.configs, setup, "headline", 1.0, progress, log,
                     reference)
    result.rows += head[0]
    result.mismatches += head[1]
    rep_cfgs = [c for c in plan.configs if c.key in plan.repeat_configs]
    for r in range(1, plan.repeats):  # the same runs again, in the same order
        rows, bad = _run_rate(base.at_rate(rate), rep_cfgs, setup, "repeat", 1.0, progress, log)
        result.rows += [{**row, "repeat": r} for row in rows]
        result.mismatches += bad
    _attach_predictions(result.rows, base.at_rate(rate), caps, plan.configs, profile,
                        plan.signals)
    result.goals = goals(result.rows)
    sweep_cfgs = [c for c in plan.configs if c.key in plan.sweep_configs]
    for factor in plan.sweep if name in plan.sweep_workloads else ():
        rows, bad = _run_rate(base.at_rate(rate * factor), sweep_cfgs, setup, "sweep", factor,
                              progress, log)
        result.rows += rows
        result.mismatches += bad
    return result


def _reference(base: Workload, plan: Plan, setup: RunSetup, progress: Progress,
               log: Callable[[str], None]) -> tuple[ConfigRun, Calibration]:
    """Configuration 1's headline run: at ``plan.rate``, or at the calibrated rate."""
    if plan.rate is not None:
        w = base.at_rate(plan.rate)
        run = run_config(plan.configs[0], w, setup, margins=True,
                         on_done=progress(f"{w.name} 1 no-cache", len(w)))
        return run, Calibration(plan.rate, 0.0, ((plan.rate, run.replay.busy_share),))
    rate, demand = first_rate(base, setup, plan.target_busy, plan.calib_sample, log)
    run, tried = calibrated(base, setup, rate, target=plan.target_busy, rounds=plan.calib_rounds,
                            tolerance=plan.calib_tolerance, progress=progress, log=log)
    return run, Calibration(tried[-1][0], demand, tuple(tried))


def capacities(workload: Workload, plan: Plan, block_bytes: int) -> Capacities:
    floor = math.ceil(plan.gpu_min_contexts * workload.max_context_blocks())
    return Capacities.from_fractions(workload.unique_blocks(), *plan.fractions, gpu_floor=floor,
                                     block_bytes=block_bytes,
                                     output_blocks=workload.output_blocks())


def _run_rate(workload: Workload, configs: Sequence[BenchConfig], setup: RunSetup, kind: str,
              factor: float, progress: Progress, log: Callable[[str], None],
              first: ConfigRun | None = None) -> tuple[list[dict[str, object]], list[Mismatch]]:
    """Every configuration at ``workload``'s rate (configuration 1 first: the reference
    tokens; ``first`` is its run when already done)."""
    rows, mismatches, reference = [], [], None
    for cfg in configs:
        if cfg.key == "1" and first is not None:
            run = first
        else:
            label = f"{workload.name} {cfg.key} {cfg.name}"
            run = run_config(cfg, workload, setup, margins=cfg.key == "1",
                             on_done=progress(label, len(workload)))
        if reference is None:
            reference = {o.request_id: o.token_ids for o in run.replay.outcomes}
            setup = dataclasses.replace(setup, oracle_lag_s=oracle_lag(run.replay.outcomes))
        bad = compare_outputs(cfg.name, reference, run.replay.outcomes)
        row = {"workload": workload.name, "kind": kind, "repeat": 0, "rate_per_s": workload.rate,
               "rate_factor": factor,
               **summarize(run, bad, workload.block_size,
                           {r.request_id: r.session for r in workload.requests})}
        row["load_avg_1m_after"] = round(os.getloadavg()[0], 2)  # others' work on this machine
        if cfg.oracle:
            row["oracle_lag_s"] = run.oracle_lag_s
        row["moved_mb"] = sum(int(row[f"bytes_{w}"]) for w in  # type: ignore[call-overload]
                              ("fetched", "demoted", "offloaded")) / 1e6
        rows.append(row)
        mismatches += bad
        log(f"  {workload.name} {kind} x{factor:g} {cfg.key} {cfg.name}: TTFT mean "
            f"{row['ttft_mean_s'] * 1e3:.1f} ms, TPOT {row['tpot_mean_s'] * 1e3:.2f} ms, "  # type: ignore[operator]
            f"busy {row['engine_busy_share']:.0%}, identical {row['outputs_identical']}")
    return rows, mismatches


def _attach_predictions(rows: list[dict[str, object]], workload: Workload, caps: Capacities,
                        configs: Sequence[BenchConfig], profile: str, signals: bool) -> None:
    tpot = {str(r["config_id"]): float(r["tpot_mean_s"])  # type: ignore[arg-type]
            for r in rows if r.get("repeat", 0) == 0 and r.get("tpot_mean_s")}
    pred = predict(workload, caps, configs, [(H100, H100_PRESET), (LOCAL, profile)], signals,
                   tpot)
    for row in rows:
        for label, fig in pred[str(row["config_id"])].items():
            row[f"sim_{label}_ttft_s"] = fig["ttft_queue_mean_s"]
            row[f"sim_{label}_gpu_hit"] = fig["gpu_hit_ratio"]
            row[f"sim_{label}_cpu_hit"] = fig.get("cpu_hit_ratio")
            row[f"sim_{label}_disk_hit"] = fig.get("disk_hit_ratio")
            row[f"sim_{label}_computed_share"] = fig["tokens_recomputed_share"]
            row[f"sim_{label}_gpu_held"] = fig.get("gpu_held_mean")


def goals(rows: Sequence[dict[str, object]]) -> dict[str, object]:
    """Issue 7's goal ratios: per round of runs (the headline, then each repeat) and their
    median, which decides whether a goal is met; absent configurations give no entry."""
    rounds: dict[int, dict[str, dict[str, object]]] = {}
    for r in rows:
        if r.get("kind") in ("headline", "repeat"):
            rounds.setdefault(int(r.get("repeat", 0)), {})[str(r["config_id"])] = r  # type: ignore[call-overload]
    out: dict[str, object] = {}
    ttft = [_ratio(rd, "3", "4", "ttft_mean_s") for rd in rounds.values() if {"3", "4"} <= set(rd)]
    if ttft:
        out["ttft_ratio_vs_prefix_offload"] = statistics.median(ttft)
        out["ttft_ratio_vs_prefix_offload_runs"] = ttft
        out["ttft_goal_met"] = out["ttft_ratio_vs_prefix_offload"] >= TTFT_GOAL
        head = rounds.get(0, {})
        for label in (H100, LOCAL):
            out[f"sim_ttft_ratio_{label}"] = _sim_ratio(head, "4", label)
            out[f"sim_ttft_bound_{label}"] = _sim_ratio(head, "P", label)
    bound = [_ratio(rd, "3", "P", "ttft_mean_s") for rd in rounds.values() if {"3", "P"} <= set(rd)]
    if bound:
        out["ttft_bound_vs_prefix_offload"] = statistics.median(bound)
        out["ttft_bound_vs_prefix_offload_runs"] = bound
    out.update(b_gap_rounds(rounds))
    pairs = [rd for rd in rounds.values() if {"4", "5c"} <= set(rd)]
    if pairs:
        tpot = [_ratio(rd, "5c", "4", "tpot_mean_s") for rd in pairs]
        at_ttft = [_ratio(rd, "5c", "4", "ttft_mean_s") for rd in pairs]
        out["tpot_ratio_vs_fixed2048"] = statistics.median(tpot)
        out["tpot_ratio_vs_fixed2048_runs"] = tpot
        out["ttft_ratio_vs_fixed2048"] = statistics.median(at_ttft)
        out["ttft_ratio_vs_fixed2048_runs"] = at_ttft
        out["tpot_goal_met"] = (out["tpot_ratio_vs_fixed2048"] >= TPOT_GOAL
                                and out["ttft_ratio_vs_fixed2048"] >= 1 / TTFT_SLACK)
        floors = [b for rd in pairs if (b := _tpot_bound(rd["5c"])) is not None]
        out["tpot_bound_vs_fixed2048"] = statistics.median(floors) if floors else None
    return out


def b_gap_closed(ttft3: float | None, ttft4: float | None, ttft_b: float | None
                 ) -> float | None:
    """The share of the 3 -> B mean-TTFT gap that 4 closes, ``(t3 - t4) / (t3 - tB)`` (above 1
    where 4 beats B: Belady is hit-optimal, not TTFT-optimal); ``None`` where one of them did
    not run or ``t3 / tB`` is below :data:`B_GAP_MIN` (no gap worth closing)."""
    if not ttft3 or not ttft4 or not ttft_b or ttft3 / ttft_b < B_GAP_MIN:
        return None
    return (ttft3 - ttft4) / (ttft3 - ttft_b)


def b_gap_rounds(rounds: dict[int, dict[str, dict[str, object]]]) -> dict[str, object]:
    """``b_gap_closed`` over the rounds where 3, 4 and B ran: ``None`` where none did or the
    median TTFT ratio 3/B is below :data:`B_GAP_MIN`, else the median of the rounds' shares;
    the rounds' shares and ratios; the simulator's share for the headline round per cost
    model."""
    trios = [[float(rd[k]["ttft_mean_s"]) for k in ("3", "4", "B")]  # type: ignore[arg-type]
             for rd in rounds.values() if {"3", "4", "B"} <= set(rd)]
    ratios = [t3 / tb for t3, _, tb in trios]
    shares = [(t3 - t4) / (t3 - tb) if t3 != tb else None for t3, t4, tb in trios]
    gap = bool(trios) and statistics.median(ratios) >= B_GAP_MIN
    closed = statistics.median([x for x in shares if x is not None]) if gap else None
    out: dict[str, object] = {"b_gap_closed": closed, "b_gap_closed_runs": shares,
                              "ttft_ratio_vs_belady_runs": ratios}
    head = rounds.get(0, {})
    for label in (H100, LOCAL):
        sim = [head.get(k, {}).get(f"sim_{label}_ttft_s") for k in ("3", "4", "B")]
        out[f"sim_b_gap_closed_{label}"] = b_gap_closed(*sim)  # type: ignore[arg-type]
    if closed is not None:
        out["b_gap_goal_met"] = closed >= B_GAP_GOAL
    return out


def _sim_ratio(head: dict[str, dict[str, object]], key: str, label: str) -> float | None:
    """The simulator's mean TTFT of configuration 3 over that of ``key`` (``None`` if absent)."""
    a, b = (head.get(k, {}).get(f"sim_{label}_ttft_s") for k in ("3", key))
    return float(a) / float(b) if a and b else None  # type: ignore[arg-type]


def _tpot_bound(row: dict[str, object]) -> float | None:
    """The largest TPOT ratio any chunking could reach over ``row``'s: its mean TPOT over its
    mean decode-only step (the TPOT of a request no prefill ever delayed, at that run's batch);
    ``None`` without decode-only steps."""
    steps, seconds = row.get("decode_only_steps"), row.get("decode_only_steps_s")
    if not steps or not seconds:
        return None
    return float(row["tpot_mean_s"]) / (float(seconds) / int(steps))  # type: ignore[arg-type, call-overload]


def _ratio(rd: dict[str, dict[str, object]], base: str, better: str, key: str) -> float:
    return float(rd[base][key]) / float(rd[better][key])  # type: ignore[arg-type]
