"""Step ``e2e``: the daemon and an engine on the GPU, end to end (``ops/e2e``), briefly.

``asymcache bench e2e`` runs its engines on the CPU; this step runs the same experiment code
(``ops/e2e/experiment.run_workload``: a fresh daemon per configuration, tiers sized from the
workload, Poisson arrivals, every configuration's greedy tokens compared with configuration 1's
request by request) with each configuration's engine on CUDA. Configurations 1 (no cache),
3 (prefix cache with CPU and disk offload), 4 (AsymCache) and P (the perfect-cache bound), on
the ``chat`` and ``longctx`` workloads, :data:`GPU_REQUESTS` requests each, at the rate where a
short burst of configuration 1 says the engine is 60% busy.

The engines run float32: the built-in model's top-1 margins are established against float32
noise (DESIGN.md section 6.3), so equal outputs across configurations are a requirement there,
not luck; bfloat16 is the engine step's business. The cost model is measured on the device
first (``asymcache profile --quick``). The engines' daemon clients register the CPU tier with
CUDA when they map it (``engine/pinned.py``; the ``pinned`` step measures that path).

Goal: every configuration's outputs identical to configuration 1's. TTFT ratios are figures.
In the rehearsal: CPU engines, the small ``quick`` workload only.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from asymcache.ops.gpu.context import StepContext
from asymcache.ops.gpu.results import Goal, StepRecord

CONFIG_KEYS = ["1", "3", "4", "P"]
GPU_WORKLOADS, CPU_WORKLOADS = ("chat", "longctx"), ("quick",)
GPU_REQUESTS, CPU_REQUESTS = 12, 4
CALIBRATION_SAMPLE = {"gpu": 4, "cpu": 2}
TARGET_BUSY = 0.6
WORKLOAD_MIN_S = 25.0  # a workload is not started with less than this left
ROW_KEYS = ("config_id", "config", "ttft_mean_s", "ttft_p50_s", "tpot_mean_s",
            "engine_busy_share", "outputs_identical", "mismatched_requests", "min_top1_margin",
            "tokens_resident", "tokens_fetched_cpu", "tokens_fetched_disk", "tokens_recomputed",
            "tokens_new", "bytes_fetched", "bytes_demoted", "bytes_offloaded")


def run(rec: StepRecord, ctx: StepContext) -> None:
    f = rec.figures
    workloads = GPU_WORKLOADS if ctx.gpu else CPU_WORKLOADS
    if not ctx.gpu:
        rec.skip("cuda_engines", "needs CUDA (the rehearsal's engines run on the CPU)")
        rec.skip("chat_longctx", "the rehearsal replays the small quick workload only")
    profile = _profile(ctx, f)
    configs = _on_device(ctx)
    f["workloads"] = {}
    for name in workloads:
        if ctx.left() < WORKLOAD_MIN_S:
            rec.skip(name, f"{ctx.left():.0f} s left of the step's bound")
            continue
        f["workloads"][name] = _workload(name, configs, profile, ctx)
        rec.save(ctx.out)
    _goals(rec, ctx)


def _profile(ctx: StepContext, f: dict[str, Any]) -> str:
    """The cost model every engine shares: measured on the device (a preset in the rehearsal)."""
    if not ctx.gpu:
        return "h100-llama3-8b"
    from asymcache.ops.commands import profile

    out = ctx.out / "e2e-cost-profile.json"
    t0 = time.monotonic()
    args = argparse.Namespace(model="builtin", out=str(out), device="cuda", dtype="float32",
                              block_size=16, disk_dir=None, quick=True)
    if profile.run(args) != 0:
        raise RuntimeError("asymcache profile failed on the device")
    f["profile_s"] = time.monotonic() - t0
    return str(out)


def _on_device(ctx: StepContext) -> list[Any]:
    """Configurations 1, 3, 4 and P with their engines on this step's device (float32)."""
    from asymcache.ops.e2e.configs import select

    engine = {"device": ctx.device, "dtype": "float32"}
    return [dataclasses.replace(c, engine={**c.engine, **engine}) for c in select(CONFIG_KEYS)]


def _workload(name: str, configs: list[Any], profile: str, ctx: StepContext) -> dict[str, Any]:
    from asymcache.ops.e2e.experiment import Plan, capacities, run_workload
    from asymcache.ops.e2e.sources import SourceSpec, build

    requests = GPU_REQUESTS if ctx.gpu else CPU_REQUESTS
    plan = Plan(configs=tuple(configs), source=SourceSpec(requests=requests, seed=0),
                rate=1.0, repeats=1, sweep=(), target_busy=TARGET_BUSY)
    base = build(name, plan.source)
    block_bytes = _block_bytes()
    t0 = time.monotonic()
    rate = _rate(base, configs[0], capacities(base, plan, block_bytes), profile,
                 CALIBRATION_SAMPLE[ctx.mode])
    plan = dataclasses.replace(plan, rate=rate)
    ctx.log(f"e2e {name}: {len(base)} requests at {rate:.2f}/s (configuration 1 "
            f"{TARGET_BUSY:.0%} busy), configurations {CONFIG_KEYS} on {ctx.device}")
    result = run_workload(name, plan, profile, block_bytes, _quiet, log=ctx.log)
    rows = [{k: r.get(k) for k in ROW_KEYS} for r in result.rows]
    return {"requests": len(base), "rate_per_s": rate, "seconds": time.monotonic() - t0,
            "capacities": result.capacities.to_dict(), "rows": rows,
            "mismatches": [dataclasses.asdict(m) for m in result.mismatches],
            "ttft_ratio_vs_prefix_offload": result.goals.get("ttft_ratio_vs_prefix_offload"),
            "ttft_bound_vs_prefix_offload": result.goals.get("ttft_bound_vs_prefix_offload")}


def _block_bytes() -> int:
    """Bytes of one block of the built-in model in float32."""
    from asymcache.engine.builtin import BuiltinSpec

    s = BuiltinSpec()
    return s.num_layers * 2 * 16 * s.num_kv_heads * s.head_dim * 4


def _rate(base: Any, reference: Any, caps: Any, profile: str, sample: int) -> float:
    """Requests/s at which configuration 1 keeps the engine about ``TARGET_BUSY`` busy, from a
    sample of the workload replayed all at once (ops/e2e/calibrate.first_rate, on our device)."""
    from asymcache.ops.e2e.calibrate import BURST_RATE
    from asymcache.ops.e2e.runner import RunSetup, run_config

    part = base.spread_sample(sample)
    burst = run_config(reference, part.at_rate(BURST_RATE), RunSetup(caps, profile)).replay
    return TARGET_BUSY / max(burst.busy_s / len(part), 1e-3)


def _quiet(_label: str, _total: int):
    return lambda _outcome: None


def _goals(rec: StepRecord, ctx: StepContext) -> None:
    runs = rec.figures["workloads"].values()
    rows = [r for w in runs for r in w["rows"]]
    identical = sum(bool(r["outputs_identical"]) for r in rows)
    rec.goal(Goal("e2e_outputs_identical", "e2e outputs identical to no-cache (3, 4, P)", 1.0,
                  value=identical / len(rows) if rows else None, unit="%", device=ctx.device,
                  note=f"{identical}/{len(rows)} runs"))
    if any(w["mismatches"] for w in runs):
        rec.status = "failed"
        rec.error = "outputs differ from the no-cache run: see e2e.json, workloads.*.mismatches"
