"""The body of ``asymcache simulate`` (``ops/commands/simulate.py`` holds its arguments)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from asymcache.cacheserver.policy import REUSE_SEMANTICS, policy_names
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.sim.config import RunSpec, TierSpec
from asymcache.ops.sim.grid import Setup, run_grid
from asymcache.ops.sim.replay import policy_kwargs
from asymcache.ops.sim.report import format_table, markdown_table, plot, write_json
from asymcache.ops.sim.trace import Trace, load_trace


def simulate(args: argparse.Namespace) -> int:
    """Load, run the grid, print the table; write JSON and PNG if asked. Returns 0 or 2."""
    try:
        trace, cost, setups = _prepare(args)
    except ValueError as exc:
        print(f"asymcache simulate: {exc}", file=sys.stderr)
        return 2
    if args.write_trace:
        from asymcache.ops.sim.formats.jsonl_out import dump_mooncake

        dump_mooncake(trace, args.write_trace)
        print(f"wrote the trace to {args.write_trace}")
    runs = len(setups) * len(args.policy) * len(args.semantics)
    print(f"trace {trace.name}: {len(trace)} requests, {trace.block_refs} block references, "
          f"{trace.unique_blocks} unique blocks of {trace.block_tokens} tokens; "
          f"cost model {cost.name}; {runs} runs")
    bar = _progress_bar(runs * len(trace), args.no_progress)
    started = time.perf_counter()
    carried = has_signals(trace)
    signals = carried if args.signals is None else args.signals == "on"
    print(f"client signals {'on' if signals else 'off'}"
          + ("" if carried else " (the trace carries none)"))
    rows = run_grid(trace, cost, args.policy, args.semantics, setups, queue=args.queue,
                    signals=signals, tpot_s=args.tpot_s, on_run=lambda r: _log_run(r, bar),
                    progress=bar.update if bar is not None else None)
    if bar is not None:
        bar.close()
    print(format_table(rows))
    print(f"{runs} runs in {time.perf_counter() - started:.1f} s")
    if args.json:
        write_json(rows, args.json)
        print(f"wrote {args.json}")
    if args.markdown:
        Path(args.markdown).write_text(markdown_table(rows) + "\n")
        print(f"wrote {args.markdown}")
    if args.plot:
        plot(rows, args.plot, f"{trace.name} · {cost.name}")
        print(f"wrote {args.plot}")
    return 0


def has_signals(trace: Trace) -> bool:
    """Whether any request carries a client signal: a session, an end, a retention or a pin."""
    return any(r.session >= 0 or r.pin_ttl_s > 0 or r.session_end or r.retention_s > 0
               for r in trace.requests)


def _prepare(args: argparse.Namespace) -> tuple[Trace, CostModel, list[Setup]]:
    for text in args.policy:
        name, options = RunSpec.parse_policy(text)
        if name not in policy_names():
            raise ValueError(f"unknown policy {name!r}; known: {policy_names()}")
        policy_kwargs(RunSpec(name, "msa", (TierSpec("gpu", 0),), options=options))
    for sem in args.semantics:
        if sem not in REUSE_SEMANTICS:
            raise ValueError(f"unknown semantics {sem!r}; known: {list(REUSE_SEMANTICS)}")
    if args.tpot_s is not None and not args.tpot_s >= 0:
        raise ValueError(f"--tpot-s must be >= 0, got {args.tpot_s}")
    if (args.gpu_frac is None) == (args.gpu_size is None):
        raise ValueError("give exactly one of --gpu-frac and --gpu-size")
    cost = CostModel.resolve(args.cost_model)
    trace = load_trace(args.trace, args.format, args.trace_opts)
    if args.limit > 0:
        trace = Trace(trace.name, trace.block_tokens, trace.requests[: args.limit],
                      trace.description, trace.params)
    if args.time_scale != 1.0:
        trace = trace.scaled(args.time_scale)
    sizes = args.gpu_frac if args.gpu_frac is not None else args.gpu_size
    setups = [Setup(s, args.cpu_frac, args.disk_frac) for s in sizes]
    for setup in setups:
        setup.tiers(trace, cost)  # validates every size before the long runs start
    return trace, cost, setups


def _progress_bar(total: int, disabled: bool):  # -> tqdm | None
    if disabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="req", unit_scale=True, mininterval=2.0, file=sys.stderr)


def _log_run(row: dict[str, object], bar: object) -> None:
    line = (f"  {row['setup']} gpu={row['gpu_frac']:.3%} {row['policy']}/{row['semantics']}: "
            f"ttft {row['ttft_mean_s']:.4f} s, gpu hit {row['gpu_hit_ratio']:.3f}, "
            f"{row['refs_per_s']} block refs/s")
    if bar is not None:
        bar.write(line)  # type: ignore[attr-defined]
    else:
        print(line)
