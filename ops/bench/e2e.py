"""``asymcache bench e2e``: AsymCache against prefix caches with offload, end to end.

Three workloads (multi-turn chat, conversations of the Mooncake trace, agent sessions; see
``ops/e2e/sources.py``) are replayed with Poisson arrivals against the engine's step loop in
this process, each under every configuration in one run (``ops/e2e/configs.py``: no cache,
prefix cache on the GPU, prefix cache with CPU and disk offload, AsymCache, ablations, and two
bounds: P, a cache that never evicts, and B, ``belady-bound``: 4's capacities with a daemon
given the replayed future, ``ops/e2e/oracle.py``),
with the same seed, the same tier sizes (GPU 10%, CPU 20%, disk 40% of the workload's unique
blocks) and the same arrival rate: the one at which configuration 1 keeps the engine about 60%
busy. Every configuration's greedy outputs must equal configuration 1's, request by request:
if not, the command says so loudly and exits with status 1 (after writing its files).

Prints per workload the measured table, where the time goes, the simulator's prediction for
the same prompts and tier sizes (``h100-llama3-8b`` preset and this machine's profile) and the
goal ratios; writes JSON, Markdown and a PNG (``ops/e2e/output.py``). ``--quick``: a small
chat workload, no rate sweep, in about a minute.
"""

from __future__ import annotations

import argparse

NAME = "e2e"
HELP = ("AsymCache vs prefix caches with offload: TTFT/TPOT on chat, Mooncake and agent "
        "workloads at 60%% load")


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _floats(text: str) -> list[float]:
    try:
        return [float(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas: {text!r}") \
            from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="a small chat workload, all configurations, no sweep (~1 minute)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    parser.add_argument("--out", default="asymcache-e2e", help="folder for JSON, Markdown, PNG")
    parser.add_argument("--workloads", type=_csv, default=None,
                        help="chat,mooncake,agent (default: these three; --quick: a small "
                             "chat); longctx: long shared contexts, where reuse dominates; "
                             "agentlong: coding-agent sessions growing to the longest context")
    parser.add_argument("--configs", type=_csv, default=None,
                        help="configuration ids or names (1 always runs; default: all)")
    parser.add_argument("--requests", type=int, default=None,
                        help="requests per workload (default 160; --quick 24)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument("--agent-pin-ttl-s", type=float, default=0.0,
                        help="TTL pins between agent steps, seconds of the generator's timeline "
                             "(default 0: none)")
    parser.add_argument("--mooncake-trace", default=None, help="Mooncake conversation trace "
                        "(default: ../shared/traces/mooncake_fast25/ next to the repository)")
    parser.add_argument("--gpu-frac", type=float, default=0.1, help="GPU pool, share of unique "
                        "blocks (default 0.1; raised to hold --gpu-min-contexts contexts)")
    parser.add_argument("--cpu-frac", type=float, default=0.2, help="CPU tier (default 0.2)")
    parser.add_argument("--disk-frac", type=float, default=0.4, help="disk tier (default 0.4)")
    parser.add_argument("--gpu-min-contexts", type=float, default=2.0,
                        help="the GPU pool holds at least this many longest contexts (default 2)")
    parser.add_argument("--target-busy", type=float, default=0.6,
                        help="engine busy share of configuration 1 to calibrate for (0.6)")
    parser.add_argument("--rate", type=float, default=None,
                        help="arrival rate in requests/s (skips the calibration)")
    parser.add_argument("--sweep", type=_floats, default=None,
                        help="rate factors of the sweep (default 0.5,1.5; --quick: none)")
    parser.add_argument("--sweep-configs", type=_csv, default=["1", "3", "4", "5c"],
                        help="configurations the sweep runs (default 1,3,4,5c)")
    parser.add_argument("--sweep-workloads", type=_csv, default=["chat"],
                        help="workloads the sweep runs on (default chat)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="rounds of the headline runs of --repeat-configs, to show the "
                             "spread on a shared machine (default 3; --quick 1)")
    parser.add_argument("--repeat-configs", type=_csv, default=["1", "3", "4", "5c", "P", "B"],
                        help="configurations repeated (default 1,3,4,5c,P,B)")
    parser.add_argument("--target-step-s", type=float, default=0.04,
                        help="adaptive chunking's step-time objective (default 0.04 s)")
    parser.add_argument("--cpu-threads", type=int, default=1,
                        help="torch threads of the engine (default 1)")
    parser.add_argument("--signals", choices=("on", "off"), default="on",
                        help="clients send their session (prompt_cache_key), retention and "
                             "session ends, and daemons rank by them; with on, configuration "
                             "5a runs lru_signals (default: on)")
    parser.add_argument("--no-lookup-mirror", dest="lookup_mirror", action="store_false",
                        help="daemons publish no KV events and engines send every LOOKUP "
                             "(default: events on, engines skip LOOKUPs that cannot hit)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asymcache.ops.e2e.configs import select
    from asymcache.ops.e2e.experiment import Plan
    from asymcache.ops.e2e.sources import SourceSpec

    try:
        configs = select(args.configs)
        plan = Plan(
            configs=tuple(configs),
            source=SourceSpec(requests=args.requests or (24 if args.quick else 160),
                              seed=args.seed, agent_pin_ttl_s=args.agent_pin_ttl_s,
                              **_trace_path(args.mooncake_trace)),
            fractions=(args.gpu_frac, args.cpu_frac, args.disk_frac),
            gpu_min_contexts=args.gpu_min_contexts, target_busy=args.target_busy,
            rate=args.rate, calib_sample=12 if args.quick else 40,
            calib_rounds=0 if args.quick else 2,
            sweep=tuple(args.sweep if args.sweep is not None else ([] if args.quick
                                                                    else [0.5, 1.5])),
            sweep_configs=tuple(c.key for c in select(args.sweep_configs)),
            sweep_workloads=tuple(args.sweep_workloads),
            repeats=args.repeats or (1 if args.quick else 3),
            repeat_configs=tuple(c.key for c in select(args.repeat_configs)),
            target_step_s=args.target_step_s, cpu_threads=args.cpu_threads,
            lookup_mirror=args.lookup_mirror, signals=args.signals == "on")
    except ValueError as exc:
        print(f"asymcache bench e2e: {exc}")
        return 2
    from asymcache.ops.e2e.sources import EXTRA_WORKLOADS, WORKLOADS

    names = args.workloads or (["quick"] if args.quick else list(WORKLOADS))
    bad = [n for n in names if n not in (*WORKLOADS, *EXTRA_WORKLOADS, "quick")]
    if bad:
        print(f"asymcache bench e2e: unknown workload(s) {bad}; known: "
              f"{[*WORKLOADS, *EXTRA_WORKLOADS, 'quick']}")
        return 2
    return _run(plan, names, Path(args.out), args.json, args.quick,
                Path(__file__).resolve().parents[2])


def _trace_path(path: str | None) -> dict[str, str]:
    return {} if path is None else {"mooncake_path": path}


def _run(plan, names: list[str], out, json_path: str | None, quick: bool, repo) -> int:
    import torch

    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.ops.e2e.calibrate import measure_profile
    from asymcache.ops.e2e.experiment import run_workload
    from asymcache.ops.e2e.output import conditions, load_average, print_result, write_all
    from asymcache.ops.e2e.summary import OutputMismatch, check_outputs

    torch.set_num_threads(plan.cpu_threads)
    meta = {**conditions(repo), "lookup_mirror": plan.lookup_mirror, "signals": plan.signals}
    print(f"[e2e] load average {meta['load_average_start']}; measuring this machine "
          f"({plan.cpu_threads} torch thread(s)) for the cost model ...", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    profile = measure_profile(out / "cost-profile.json", quick=quick)
    block_bytes = CostModel.from_profile(profile).kv_bytes_per_token * plan.source.block_size
    results = []
    for name in names:
        results.append(run_workload(name, plan, str(profile), block_bytes, _progress))
        print_result(results[-1])
    meta["load_average_end"] = load_average()
    png = write_all(out, results, meta, json_path)
    print(f"\nwrote {out / 'e2e.json'}, {out / 'e2e.md'}, {png}"
          + (f" and {json_path}" if json_path else ""))
    try:
        check_outputs([r for res in results for r in res.rows],
                      [m for res in results for m in res.mismatches])
    except OutputMismatch as exc:
        print(f"\n!!! {exc}", flush=True)
        import sys

        print(f"asymcache bench e2e: FAILED: {exc}", file=sys.stderr)
        return 1
    print("outputs: every configuration's greedy tokens equal the no-cache run's, request by "
          "request")
    return 0


def _progress(label: str, total: int):
    """A tqdm bar for one replay; returns the per-request callback (closes itself at the end)."""
    import sys

    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="req", leave=False, mininterval=1.0,
               file=sys.stderr)

    def done(_outcome) -> None:
        bar.update(1)
        if bar.n >= total:
            bar.close()

    return done
