"""Step ``bench-kernels``: ``asymcache bench kernels`` on CUDA, against the measured copy bandwidth.

1. The device's copy bandwidth: one device-to-device copy of 2 GiB, bytes read plus bytes
   written per second (the HBM traffic a bandwidth-bound kernel can reach).
2. ``asymcache bench kernels --peak-bandwidth <that>`` (``ops/bench/kernels.py``): MSA prefill
   against SDPA's flash backend on contiguous KV, 1/8/32 segments at equal query tokens, and
   decode (batch 32, KV 4096 and 16384 tokens), bfloat16, Llama-3-8B heads. Its JSON is kept
   as ``bench-kernels-raw.json``.

Goals (docs/kernels.md), each judged on the largest shape measured (the others are in the JSON):
MSA prefill >= 70% of SDPA flash's throughput; <= 10% more time per FLOP at 8 segments than at
one; decode KV bytes per second >= 70% of the measured copy bandwidth.

In the rehearsal the bench runs its torch path at tiny sizes and the copy bandwidth is not
measured.
"""

from __future__ import annotations

import json
import statistics
import time

from asymcache.ops.gpu.context import StepContext, python_module, run_bounded
from asymcache.ops.gpu.results import Goal, StepRecord
from asymcache.ops.gpu.wheels import ROOT

COPY_BYTES = 2 << 30
GPU_ARGS = ["--decode-lengths", "4096,16384", "--decode-batch", "32", "--repeat", "5"]
CPU_ARGS = ["--prefill-lengths", "32,64", "--segment-context", "128", "--segment-tokens", "32",
            "--segments", "1,8", "--decode-batch", "2", "--decode-lengths", "64",
            "--repeat", "1", "--heads", "4", "--kv-heads", "2", "--head-dim", "32"]


def run(rec: StepRecord, ctx: StepContext) -> None:
    f = rec.figures
    extra = []
    if ctx.gpu:
        f["copy_gbs"] = _copy_bandwidth()
        extra = ["--peak-bandwidth", f"{f['copy_gbs']:.1f}"]
        ctx.log(f"device copy bandwidth {f['copy_gbs']:.0f} GB/s (read + write)")
        rec.save(ctx.out)
    else:
        rec.skip("copy_bandwidth", "needs CUDA")
        rec.skip("sdpa_flash", "needs CUDA (the rehearsal times the torch path)")
    raw = ctx.out / "bench-kernels-raw.json"
    raw.unlink(missing_ok=True)
    cmd = python_module("asymcache.ops.cli", "bench", "kernels", "--out", str(raw),
                        *(GPU_ARGS if ctx.gpu else CPU_ARGS), *extra)
    t0 = time.monotonic()
    code = run_bounded(cmd, ctx.left() - 2, ctx.out / "bench-kernels-cli.log", cwd=ROOT)
    f.update(cli_exit=code, cli_s=time.monotonic() - t0)
    if code != 0 or not raw.is_file():
        rec.status = "failed"
        rec.error = ("asymcache bench kernels " + ("ran past the step's bound" if code is None
                     else f"exited with {code}") + "; see bench-kernels-cli.log")
        return
    _goals(rec, ctx, json.loads(raw.read_text()))


def _copy_bandwidth() -> float:
    """GB/s of a device-to-device copy, counting the bytes read and the bytes written."""
    import torch

    src = torch.empty(COPY_BYTES, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    times = []
    for _ in range(10):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return 2 * COPY_BYTES / statistics.median(times) / 1e9


def _goals(rec: StepRecord, ctx: StepContext, r: dict) -> None:
    f = rec.figures
    f["raw"] = r
    pre = max(r["prefill"], key=lambda p: p["tokens"])
    f["prefill_tokens"], f["prefill_ratio"] = pre["tokens"], pre["sdpa_s"] / pre["msa_s"]
    per_flop = {s["segments"]: s["msa_s"] / s["flops"] for s in r["segments"]}
    seg = 8 if 8 in per_flop else max(per_flop)
    f["segments_measured"], f["segment_overhead"] = seg, per_flop[seg] / per_flop[1] - 1
    dec = max(r["decode"], key=lambda d: d["kv_bytes"])
    f["decode_gbs"] = dec["kv_bytes"] / dec["msa_s"] / 1e9
    f["decode_fraction"] = f["decode_gbs"] / f["copy_gbs"] if f.get("copy_gbs") else None
    rec.goal(Goal("prefill_vs_sdpa", f"MSA prefill / SDPA flash, {pre['tokens']} tokens", 0.7,
                  value=f["prefill_ratio"], device=ctx.device))
    rec.goal(Goal("segment_overhead", f"time per FLOP at {seg} segments, over 1 segment", 0.10,
                  at_least=False, value=f["segment_overhead"], unit="%", device=ctx.device))
    rec.goal(Goal("decode_vs_copy", f"MSA decode / copy bandwidth, {dec['batch']} x "
                  f"{dec['kv_len']} KV", 0.7, value=f["decode_fraction"], device=ctx.device,
                  note="" if f["decode_fraction"] is not None else "needs CUDA"))
    ctx.log(f"prefill {f['prefill_ratio']:.0%} of SDPA, {seg}-segment overhead "
            f"{f['segment_overhead']:+.1%}, decode {f['decode_gbs']:.0f} GB/s")
