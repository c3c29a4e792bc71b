"""``asymcache demo``: the same multi-turn chat served twice, by a prefix cache with CPU and
disk offload (LRU, like LMCache with vLLM) and by AsymCache, side by side.

Each run starts its own cache daemon (a temporary ipc path and LMDB folder, removed at the end)
and an engine on the built-in model, replays the chat with Poisson-started sessions on the wall
clock (``ops/e2e``: the benchmark's driver), then stops both. The tiers are sized from the
workload (GPU 10% of its unique blocks, at least two of its longest contexts; CPU 20%; disk
40%), so blocks really move between tiers. The arrival rate keeps a cache-less engine about
60% busy (measured first on a sample). Ends with a table (TTFT mean and p90, prompt tokens per
tier, recomputed tokens, whether both runs produced the same greedy tokens) and a PNG in the
output folder. Everything started is stopped, also on Ctrl-C. Under half a minute on two
shared cores (15 s measured with 96 turns).
"""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "serve a short chat twice: prefix cache with CPU/disk offload, then AsymCache; compare"
COLUMNS = (
    ("config", "config", "{}"), ("TTFT mean ms", "ttft_mean_s", "ms"),
    ("p90 ms", "ttft_p90_s", "ms"), ("hit gpu", "hit_gpu", "{:.0%}"),
    ("cpu", "hit_cpu", "{:.0%}"), ("disk", "hit_disk", "{:.0%}"),
    ("recomputed", "tokens_recomputed", "{}"), ("computed", "prefill_tokens_computed", "{}"),
    ("same outputs", "outputs_identical", "yesno"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None,
                        help="output folder (default: a new asymcache-demo-* temp folder)")
    parser.add_argument("--requests", type=int, default=96, help="chat turns (default 96)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")


def run(args: argparse.Namespace) -> int:
    import sys
    import tempfile
    from pathlib import Path

    if args.requests < 2:
        print("asymcache demo: --requests must be at least 2", file=sys.stderr)
        return 2
    out = Path(args.out or tempfile.mkdtemp(prefix="asymcache-demo-"))
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _demo(args, out)
    except KeyboardInterrupt:
        print("\ninterrupted: everything the demo started is stopped", flush=True)
        return 130


def _demo(args: argparse.Namespace, out) -> int:
    import math

    import torch

    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.ops.e2e.calibrate import first_rate, measure_profile
    from asymcache.ops.e2e.configs import CONFIGS, Capacities
    from asymcache.ops.e2e.runner import RunSetup
    from asymcache.ops.e2e.sources import SourceSpec, build

    torch.set_num_threads(1)
    workload = build("quick", SourceSpec(requests=args.requests, seed=args.seed))
    print(f"asymcache demo: {len(workload)} chat turns on the built-in model, output in {out}",
          flush=True)
    profile = measure_profile(out / "cost-profile.json", quick=True)
    kv_bytes = CostModel.from_profile(profile).kv_bytes_per_token
    caps = Capacities.from_fractions(workload.unique_blocks(), 0.1, 0.2, 0.4,
                                     gpu_floor=math.ceil(2 * workload.max_context_blocks()),
                                     block_bytes=kv_bytes * workload.block_size)
    setup = RunSetup(caps, str(profile))
    print(f"tiers: GPU {caps.gpu_blocks} blocks, CPU {caps.cpu_blocks}, disk "
          f"{caps.disk_blocks} ({caps.unique_blocks} unique blocks in the workload)")
    rate, _ = first_rate(workload, setup, 0.6, 12, log=print)
    timed = workload.at_rate(rate)
    runs = [_serve(cfg, timed, setup) for cfg in (CONFIGS[2], CONFIGS[3])]
    return _report(runs, timed, out)


def _serve(cfg, workload, setup):  # -> ConfigRun
    import sys

    from tqdm import tqdm

    from asymcache.ops.e2e.runner import run_config

    print(f"\n[{cfg.key}] {cfg.name}: {cfg.stands_for}", flush=True)
    with tqdm(total=len(workload), unit="req", file=sys.stderr, mininterval=0.5,
              desc=cfg.name) as bar:
        return run_config(cfg, workload, setup, on_done=lambda _o: bar.update(1),
                          log=lambda line: print(line, flush=True))


def _report(runs, workload, out) -> int:
    from asymcache.ops.e2e.report import plot, text_table
    from asymcache.ops.e2e.summary import compare_outputs, summarize

    first = {o.request_id: o.token_ids for o in runs[0].replay.outcomes}
    rows = []
    for run in runs:
        same = compare_outputs(run.config.name, first, run.replay.outcomes)
        rows.append({"workload": "demo chat", "kind": "headline", "rate_per_s": workload.rate,
                     **summarize(run, same, workload.block_size)})
    print("\n" + text_table(rows, COLUMNS))
    png = out / "demo.png"
    plot(rows, png, f"asymcache demo: {len(workload)} chat turns, {workload.rate:.1f}/s")
    a, b = (float(r["ttft_mean_s"]) for r in rows)  # type: ignore[arg-type]
    print(f"\nat {workload.rate:.2f} requests/s, mean TTFT, prefix cache with offload / "
          f"AsymCache: {a / b:.2f}x; same greedy "
          f"outputs: {'yes' if rows[1]['outputs_identical'] else 'NO'}")
    print(f"plot: {png}")
    return 0 if rows[1]["outputs_identical"] else 1
