"""``asymcache bench preempt``: preemptible hosts, drain on notice and resume elsewhere.

Two hosts, each a daemon with an engine server behind it (``asymcache engine``, AsymCache's
configuration 4), the daemons sharing a three-node Redis Cluster (``redis-server``) as their
remote tier, serve the ``longctx`` workload (its steady state, after a warm-up:
:func:`steady_window`) open loop while a schedule preempts one host at a time: a notice every
60 s ± 20% (seeded), 30 s of grace (the host leaves the fleet and drains at once with a
deadline of 20 s, gets SIGTERM at 27 s and is taken back, engine and daemon killed, at 30 s),
a replacement host with empty tiers serving 60 s after the notice
(``ops/bench/_preempt_schedule.py``). The client resends a drained request, with the tokens it
generated so far, to the other host (``ops/bench/_preempt_client.py``).

Three modes on the same workload and schedule (``ops/bench/_preempt_run.py``): ``cache``
(resume from the shared cache), ``recompute`` (no shared tier: resume recomputes what the other
host lacks), ``none`` (no preemption, the reference). ``--rounds`` paired rounds, the order of
the modes rotating from round to round, each round with its own schedule (seed + round) that
every mode of the round meets; each round's ratios and their median are reported
(``ops/bench/_preempt_report.py``). The arrival rate is one at which one host alone would be
about ``--target-busy`` busy (measured after the warm-up on the first requests back to back),
so the host left carries the load while the other is out. ``--quick`` multiplies every time
figure by 0.1 and runs three preemptions. Exit status 1 if any output differs from the
no-preemption run's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from asymcache.ops.bench._preempt_run import Setup
    from asymcache.ops.bench._preempt_schedule import Preemption, Timing
    from asymcache.ops.bench.redis_cluster import LocalRedisCluster
    from asymcache.ops.e2e.workload import E2ERequest, Workload

NAME = "preempt"
HELP = ("preemptible hosts: drain on notice, resume on the other host from the shared cache vs "
        "by recomputing vs no preemption (longctx, P50/P99 latency)")
QUICK_FACTOR = 0.1
CALIBRATION_REQUESTS = 16
BLOCK_SIZE = 16  # tokens per KV block (the engines' default)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help=f"every time figure x{QUICK_FACTOR:g}, 3 preemptions "
                             "(a few minutes)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--out", default="bench-preempt", help="folder for JSON and PNG")
    parser.add_argument("--rounds", type=int, default=3, help="paired rounds (default 3)")
    parser.add_argument("--preemptions", type=int, default=None,
                        help="notices per run (default 6; --quick 3)")
    parser.add_argument("--time-factor", type=float, default=None,
                        help=f"multiply every time figure (default 1; --quick {QUICK_FACTOR:g})")
    parser.add_argument("--rate", type=float, default=None,
                        help="arrivals per second (default: calibrated, see --target-busy)")
    parser.add_argument("--target-busy", type=float, default=0.6,
                        help="how busy one host alone would be at the arrival rate (0.6)")
    parser.add_argument("--seed", type=int, default=0, help="workload and schedule seed")


def run(args: argparse.Namespace) -> int:
    from asymcache.ops.bench._preempt_report import plot, print_table
    from asymcache.ops.bench._preempt_schedule import Timing, schedule
    from asymcache.ops.bench.redis_cluster import LocalRedisCluster

    if shutil.which("redis-server") is None:
        print("asymcache bench preempt: needs redis-server (apt-get install redis-server)")
        return 2
    if args.rounds < 1 or not 0 < args.target_busy < 1:
        print("asymcache bench preempt: --rounds >= 1 and 0 < --target-busy < 1")
        return 2
    factor = args.time_factor or (QUICK_FACTOR if args.quick else 1.0)
    timing = Timing().scaled(factor)
    count = args.preemptions if args.preemptions is not None else (3 if args.quick else 6)
    plans = [tuple(schedule(timing, count, args.seed + r)) for r in range(args.rounds)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="acpre-"))  # short: ipc paths are limited to ~100 B
    try:
        with LocalRedisCluster(tmp / "redis") as cluster:
            setup, meta = _setup(args, timing, plans, out, cluster, tmp)
            rows, result = measure(setup, args.rounds, print, plans=plans)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print_table(rows, result)
    png = out / "preempt.png"
    plot(rows, timing, png)
    _write(result, rows, meta, out / "preempt.json", args.json)
    print(f"[preempt] wrote {out / 'preempt.json'} and {png}"
          + (f" and {args.json}" if args.json else ""))
    if not result["outputs_identical"]:
        print(f"asymcache bench preempt: FAILED: outputs differ from the no-preemption run in "
              f"{len(result['mismatches'])} request(s)")
        return 1
    return 0


def _setup(args: argparse.Namespace, timing: Timing, plans: list[tuple[Preemption, ...]],
           out: Path, cluster: LocalRedisCluster, tmp: Path) -> tuple[Setup, dict[str, Any]]:
    """Cost profile, calibrated rate, workload and tier sizes: the runs' Setup and the facts
    to report with it."""
    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.ops.bench._preempt_schedule import Timing, span_s
    from asymcache.ops.e2e.calibrate import measure_profile

    print("[preempt] measuring this machine for the cost model ...", flush=True)
    profile = measure_profile(out / "cost-profile.json", quick=True)
    block_bytes = CostModel.from_profile(profile).kv_bytes_per_token * BLOCK_SIZE
    plan = plans[0]
    span = max(span_s(timing, list(p)) for p in plans)
    probe, warmup = steady_window(CALIBRATION_REQUESTS, span, args.seed)
    setup = host_setup(probe, timing, plan, block_bytes, str(profile), cluster, tmp, warmup)
    rate = args.rate or calibrate(setup, args.target_busy, print)
    workload, warmup = steady_window(max(4, math.ceil(rate * span)), span, args.seed)
    setup = host_setup(workload, timing, plan, block_bytes, str(profile), cluster, tmp, warmup)
    caps = setup.engine_options["num_gpu_blocks"]
    print(f"[preempt] {len(workload)} {workload.name} requests over {span:.0f} s after "
          f"{len(warmup)} warm-up requests per host "
          f"({workload.rate:.2f}/s); {len(plan)} preemptions per run, at "
          f"{'; '.join(', '.join(f'{p.notice_s:.1f}' for p in pl) for pl in plans)} s in the "
          f"rounds; grace {timing.grace_s:g} s, drain deadline "
          f"{timing.drain_deadline_s:.1f} s, replacement at +{timing.replace_s:g} s; engine "
          f"pool {caps} blocks", flush=True)
    meta = {"workload": workload.name, "requests": len(workload), "rate_per_s": workload.rate,
            "warmup_requests": len(warmup),
            "span_s": span, "time_factor": timing.period_s / Timing().period_s,
            "timing": {**vars(timing), "drain_deadline_s": timing.drain_deadline_s},
            "schedules": [[p.to_dict() for p in pl] for pl in plans],
            "engine_options": setup.engine_options,
            "daemon_flags": setup.daemon_flags}
    return setup, meta


def steady_window(n: int, span: float, seed: int) -> tuple[Workload, tuple[E2ERequest, ...]]:
    """``n`` requests of ``longctx`` in its steady state, their arrivals spread over ``span``
    seconds, and the warm-up requests that come before them: the window is the middle third of
    a trace three times as long (its first seconds start every session at once, a burst of
    cold contexts that would hide what the preemptions do); the warm-up is, for each shared
    context the window's requests start with, the last earlier request that starts with it."""
    from asymcache.ops.e2e.sources import SourceSpec, build

    full = build("longctx", SourceSpec(requests=3 * n, seed=seed))
    before, part = full.requests[:n], full.requests[n:2 * n]
    heads = {r.prompt[:BLOCK_SIZE] for r in part}
    last = {r.prompt[:BLOCK_SIZE]: r for r in before if r.prompt[:BLOCK_SIZE] in heads}
    warmup = tuple(sorted(last.values(), key=lambda r: r.arrival_s))
    t0 = part[0].arrival_s
    reqs = tuple(dataclasses.replace(r, arrival_s=r.arrival_s - t0) for r in part)
    width = max(reqs[-1].arrival_s, 1e-3)
    window = dataclasses.replace(full, requests=reqs, rate=len(reqs) / width)
    return window.at_rate(window.rate * width / span), warmup  # the last arrival at ``span``


def host_setup(workload: Workload, timing: Timing, plan: tuple[Preemption, ...],
               block_bytes: int, cost_model: str, cluster: LocalRedisCluster,
               root: Path, warmup: tuple[E2ERequest, ...] = ()) -> Setup:
    """The hosts' settings for ``workload``: configuration 4 engines sized as in ``bench e2e``
    (GPU pool 10% of the unique blocks, at least two longest contexts; CPU 20%, disk 40%),
    except that the CPU tier holds at least the GPU pool: a drain writes the running requests'
    blocks through the CPU tier, and only what enters it is written to the remote tier."""
    from asymcache.ops.bench._preempt_run import Setup
    from asymcache.ops.e2e.configs import CONFIGS, lmdb_entry_bytes
    from asymcache.ops.e2e.experiment import Plan, capacities
    from asymcache.ops.e2e.runner import RunSetup
    from asymcache.ops.e2e.sources import SourceSpec

    caps = capacities(workload, Plan(configs=(), source=SourceSpec(len(workload))), block_bytes)
    caps = dataclasses.replace(caps, cpu_blocks=max(caps.cpu_blocks, caps.gpu_blocks))
    cfg = next(c for c in CONFIGS if c.key == "4")
    options = RunSetup(caps, cost_model).engine_options(cfg, None)
    options.pop("cache_endpoint")
    options["drain_timeout_s"] = timing.drain_deadline_s
    remote = {"remote_nodes": ",".join(cluster.nodes), "remote_timeout_s": 1.0,
              "remote_capacity_bytes": 4 * caps.unique_blocks * block_bytes}
    return Setup(workload, timing, tuple(plan),
                 caps.daemon_flags("asym", lmdb_entry_bytes(block_bytes)), options, remote,
                 root, lambda: flush_cluster(cluster), tuple(warmup))


def flush_cluster(cluster: LocalRedisCluster) -> None:
    """Empty every node of the cluster (each run starts from nothing)."""
    for i in range(len(cluster.ports)):
        cluster.command(i, "FLUSHALL")


def calibrate(setup: Setup, target_busy: float, log: Callable[[str], None]) -> float:
    """Arrivals per second at which one host alone is about ``target_busy`` busy: after the
    warm-up, the workload's first requests one at a time on one fresh host with the shared
    cluster; their mean latency is the demand per request."""
    from asymcache.ops.bench._preempt_client import complete
    from asymcache.ops.bench._preempt_hosts import Fleet, Host
    from asymcache.ops.bench._preempt_run import warm

    setup.flush_remote()
    host = Host("calib", setup.root, {**setup.daemon_flags, **setup.remote,
                                      "remote_prefix": "calib:"}, setup.engine_options)
    fleet = Fleet()
    try:
        host.start()
        warm([host], setup.warmup)
        fleet.serve(0, host)
        seconds = []
        for r in setup.workload.requests[:CALIBRATION_REQUESTS]:
            t = time.monotonic()
            complete(r, t, fleet)
            seconds.append(time.monotonic() - t)
    finally:
        host.stop()
    demand = statistics.fmean(seconds)
    log(f"[preempt] calibration: {len(seconds)} requests one at a time, {demand * 1e3:.0f} ms "
        f"each -> {target_busy / demand:.2f} requests/s keep one host {target_busy:.0%} busy")
    return target_busy / demand


def measure(setup: Setup, rounds: int, log: Callable[[str], None] = print,
            modes: tuple[str, ...] | None = None,
            plans: list[tuple[Preemption, ...]] | None = None,
            ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``rounds`` paired rounds of every mode (the order rotates each round; round ``r`` meets
    ``plans[r]``, else ``setup.preemptions``): the rows and the summary (ratios, output check,
    goals)."""
    from asymcache.ops.bench._preempt_report import row, summarize
    from asymcache.ops.bench._preempt_run import MODES, run_mode

    modes = modes or MODES
    rows = []
    for r in range(rounds):
        order = modes[r % len(modes):] + modes[:r % len(modes)]
        this = setup if plans is None else dataclasses.replace(setup, preemptions=plans[r])
        for mode in order:
            t = time.monotonic()
            res = run_mode(mode, this, f"r{r}{mode[:2]}")
            rows.append(row(res, setup.timing, r))
            x = rows[-1]
            log(f"  round {r + 1}/{rounds} {mode:<9} P50 {x['p50_latency_s'] * 1e3:.0f} ms, "
                f"P99 {x['p99_latency_s'] * 1e3:.0f} ms, {x['resumed_requests']} resumed, "
                f"{x['tokens_recomputed']} tokens recomputed, "
                f"{x['bytes_flushed'] / 1e6:.2f} MB flushed ({time.monotonic() - t:.0f} s)")
    return rows, summarize(rows)


def document(result: dict[str, Any], rows: list[dict[str, Any]],
             meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: the set-up, the summary (the keys scripts read:
    ``p99_ratio_vs_no_preempt``, ``p99_ratio_recompute_vs_cache``, ``outputs_identical``) and
    every run's row without its texts."""
    from asymcache.ops.bench._preempt_report import public
    from asymcache.ops.e2e.output import load_average

    return {"benchmark": NAME, **meta, "load_average_end": load_average(), **result,
            "rows": public(rows)}


def _write(result: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any],
           path: Path, extra: str | None) -> None:
    text = json.dumps(document(result, rows, meta), indent=1, default=str)
    path.write_text(text)
    if extra:
        Path(extra).parent.mkdir(parents=True, exist_ok=True)
        Path(extra).write_text(text)
