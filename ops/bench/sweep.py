"""``asymcache bench sweep``: arrival-rate sweeps with goodput, beside ``bench e2e``.

For each workload, every configuration (default 1, 3 and 4) runs from light load to one rate
past configuration 3's knee; goodput (the highest rate whose p90 TTFT and p90 TPOT meet their
SLOs) is found by bisection to within 5%; at the rate where configuration 3 is 80% busy,
configurations 3 and 4 run in interleaved pairs for the headline TTFT ratio. Method:
``ops/e2e/sweep.py``. Writes ``sweep.json`` (rows, each with ``goodput_rps``),
``sweep-report.json`` (per workload ``goodput_rps``, ``ttft_ratio_at_80pct_busy``), ``sweep.md``
and a PNG per workload. Exits 1 when any run's outputs differ from configuration 1's.
"""

from __future__ import annotations

import argparse

from asymcache.ops.bench.e2e import _csv, _floats  # the same list arguments as bench e2e

NAME = "sweep"
HELP = "rate sweeps with goodput (p90 TTFT/TPOT SLOs) and the TTFT ratio at 80%% busy"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workloads", type=_csv, default=["longctx", "agentlong"],
                        help="workloads (default longctx,agentlong; any of bench e2e's)")
    parser.add_argument("--configs", type=_csv, default=["1", "3", "4", "P", "B"],
                        help="configurations (default 1,3,4 and the bounds P,B; 1 is always "
                             "run first)")
    parser.add_argument("--factors", type=_floats, default=None,
                        help="rates as multiples of the rate that keeps configuration 1 60%% "
                             "busy (default 0.25,0.5,1,1.5,2,3, grown by x1.5 until past "
                             "configuration 3's knee)")
    parser.add_argument("--ttft-slo-s", type=float, default=None,
                        help="p90 TTFT SLO (default: --slo-factor x configuration 1's "
                             "unloaded mean TTFT)")
    parser.add_argument("--tpot-slo-s", type=float, default=None,
                        help="p90 TPOT SLO (default: --slo-factor x its unloaded mean TPOT)")
    parser.add_argument("--slo-factor", type=float, default=5.0, help="default 5")
    parser.add_argument("--tolerance", type=float, default=1.05,
                        help="bisection stops when the bracketing rates are within this ratio")
    parser.add_argument("--rounds", type=int, default=3,
                        help="interleaved pairs of 3 and 4 at 80%% busy (default 3)")
    parser.add_argument("--requests", type=int, default=160, help="requests per workload")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--signals", choices=("on", "off"), default="on")
    parser.add_argument("--budget-min", type=float, default=240.0,
                        help="no new run starts after this many minutes (default 240)")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: the quick workload, 12 requests, two rates, "
                             "coarse bisection, one round")
    parser.add_argument("--out", default="asymcache-sweep", help="folder for the files")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asymcache.ops.e2e.configs import select
    from asymcache.ops.e2e.sources import EXTRA_WORKLOADS, WORKLOADS, SourceSpec
    from asymcache.ops.e2e.sweep import SweepPlan

    names = ["quick"] if args.quick else args.workloads
    bad = [n for n in names if n not in (*WORKLOADS, *EXTRA_WORKLOADS, "quick")]
    try:
        if bad:
            raise ValueError(f"unknown workload(s) {bad}; known: "
                             f"{[*WORKLOADS, *EXTRA_WORKLOADS, 'quick']}")
        keys = args.configs if "1" in args.configs else ["1", *args.configs]
        configs = select(keys)
        quick = {"factors": (0.5, 2.0), "tolerance": 2.0, "rounds": 1, "calib_sample": 6,
                 "unloaded_sample": 4, "max_factor": 2.0} if args.quick else {}
        knobs = {"tolerance": args.tolerance, "rounds": args.rounds, **quick}
        if args.factors:
            knobs["factors"] = tuple(args.factors)
        plan = SweepPlan(
            configs=tuple(configs),
            source=SourceSpec(requests=12 if args.quick else args.requests, seed=args.seed),
            ttft_slo_s=args.ttft_slo_s, tpot_slo_s=args.tpot_slo_s, slo_factor=args.slo_factor,
            signals=args.signals == "on", budget_s=args.budget_min * 60.0, **knobs)
    except ValueError as exc:
        print(f"asymcache bench sweep: {exc}")
        return 2
    return _run(plan, names, Path(args.out), args.quick, Path(__file__).resolve().parents[2])


def _run(plan, names: list[str], out, quick: bool, repo) -> int:
    import sys

    import torch

    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.ops.bench.e2e import _progress
    from asymcache.ops.e2e.calibrate import measure_profile
    from asymcache.ops.e2e.output import conditions, load_average
    from asymcache.ops.e2e.summary import OutputMismatch, check_outputs
    from asymcache.ops.e2e.sweep import run_sweep
    from asymcache.ops.e2e.sweep_output import write_sweep

    torch.set_num_threads(plan.cpu_threads)
    meta = {**conditions(repo), "signals": plan.signals}
    out.mkdir(parents=True, exist_ok=True)
    print(f"[sweep] load average {meta['load_average_start']}; measuring this machine for the "
          "cost model ...", flush=True)
    profile = measure_profile(out / "cost-profile.json", quick=quick)
    block_bytes = CostModel.from_profile(profile).kv_bytes_per_token * plan.source.block_size
    results = [run_sweep(name, plan, str(profile), block_bytes, _progress) for name in names]
    meta["load_average_end"] = load_average()
    pngs = write_sweep(out, results, meta)
    print((out / "sweep.md").read_text())
    print(f"wrote {out / 'sweep.json'}, {out / 'sweep-report.json'}, {out / 'sweep.md'}, "
          + ", ".join(str(p) for p in pngs))
    try:
        check_outputs([r for res in results for r in res.rows],
                      [m for res in results for m in res.mismatches])
    except OutputMismatch as exc:
        print(f"asymcache bench sweep: FAILED: {exc}", file=sys.stderr)
        return 1
    return 0
