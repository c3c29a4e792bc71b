"""``asymcache profile``: measure this device for the cost model and write a JSON profile.

    asymcache profile --model DIR --out PATH [--device D] [--dtype T] [--disk-dir DIR]

The profile (schema in ``cacheserver/policy/cost.py``) holds the forward-pass coefficients
fitted on this device, the per-segment cost, and the CPU and disk load links; engines and the
daemon read it with ``--cost-model PATH``. How it is measured: ``engine/profiler.py``.
"""

from __future__ import annotations

import argparse

NAME = "profile"
HELP = "measure this device and write a cost-model profile (JSON) for --cost-model"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="builtin", help="model folder, or 'builtin'")
    parser.add_argument("--out", required=True, help="where to write the JSON profile")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--dtype", default=None, help="float32, bfloat16 or float16")
    parser.add_argument("--block-size", type=int, default=16, help="tokens per KV block")
    parser.add_argument("--disk-dir", default=None,
                        help="folder on the disk tier's file system (default: the output's)")
    parser.add_argument("--quick", action="store_true", help="fewer shapes and repeats")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from asymcache.engine.builtin import resolve_model_dir
    from asymcache.engine.kv_pool import KVPool
    from asymcache.engine.model import load_model
    from asymcache.engine.profiler import FULL, QUICK, measure_cost_model

    grid = QUICK if args.quick else FULL
    model_dir = resolve_model_dir(args.model)
    model, info = load_model(model_dir, args.device, args.dtype)
    layout = info.kv_layout(args.block_size)
    need = max(grid.positions) + max(grid.sizes)
    pool = KVPool(layout, -(-need // args.block_size) + 1, info.device)
    out = Path(args.out)
    disk_dir = Path(args.disk_dir) if args.disk_dir else out.resolve().parent
    print(f"profiling {model_dir.name} on {args.device} ({info.dtype}) ...", flush=True)
    cost = measure_cost_model(model, pool, grid, disk_dir, model_name=model_dir.name)
    cost.to_profile(out)
    print(f"linear {cost.linear_s_per_token * 1e6:.2f} us/token, attention "
          f"{cost.attn_s_per_token_position * 1e9:.3f} ns/token/position, pass "
          f"{cost.pass_s * 1e3:.3f} ms, segment {cost.segment_s * 1e6:.1f} us")
    for link in cost.load:
        print(f"load {link.tier}: {link.bandwidth_bps / 1e9:.2f} GB/s, "
              f"{link.latency_s * 1e6:.1f} us latency")
    print(f"wrote {out}")
    return 0
