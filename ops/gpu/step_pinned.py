"""Step ``pinned``: GPU <-> CPU-tier copies through a registered shared-memory slab.

The engine's path, piece by piece: a slab created as the daemon creates it, mapped as an engine
maps it (``tiers/shm.py``), one copy per block between it and a ``KVPool`` on the device
(``engine/kv_pool.py``: loads on the copy stream, stores waiting for the bytes). Blocks have the
Llama-3-8B layout (32 layers, 8 KV heads of 128, 16 tokens, bf16: 2 MiB each). Measured:

* ``pageable_*_gbs``: loads (host -> device) and stores (device -> host) before registration;
* ``register_s`` and ``pinned_*_gbs``: after ``engine.pinned.PinnedRegion`` registered the
  mapping; ``load_enqueue_share``: the share of a load's time the host spends issuing it (near 0
  when the copies are DMA that overlap the host);
* ``host_h2d_gbs`` / ``host_d2h_gbs``: the device's host-transfer bandwidth, one bulk copy of
  the same bytes from a page-locked torch tensor (what the link gives at best);
* ``overlap_share``: copies on the copy stream while matmuls run on the compute stream, the time
  saved against running them one after the other, over the shorter of the two (1 = hidden).

Goal: pinned tier copies >= 70% of the host-transfer bandwidth (the lower of load and store).
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable

from asymcache.ops.gpu.context import StepContext
from asymcache.ops.gpu.results import Goal, StepRecord

GPU_BLOCKS, CPU_BLOCKS = 256, 32
REPEATS = 5
GOAL = 0.7


def run(rec: StepRecord, ctx: StepContext) -> None:
    import torch

    from asymcache.cacheserver.blocks import KVLayout
    from asymcache.engine.kv_pool import KVPool
    from asymcache.tiers.shm import attach, create_slab

    layout = (KVLayout(32, 8, 128, 16, "bfloat16") if ctx.gpu
              else KVLayout(2, 2, 32, 16, "float32"))
    n = GPU_BLOCKS if ctx.gpu else CPU_BLOCKS
    f = rec.figures
    f.update(block_bytes=layout.bytes_per_block, blocks=n, bytes=n * layout.bytes_per_block)
    owner = create_slab(layout.bytes_per_block, n, populate=True)  # the daemon's side
    mapped = attach(owner.name, layout.bytes_per_block, n)  # the engine's side
    pool = KVPool(layout, n, ctx.device)
    try:
        _measure(rec, ctx, pool, mapped, torch)
    finally:
        del pool
        gc.collect()
        mapped.close()
        owner.close()


def _measure(rec: StepRecord, ctx: StepContext, pool, mapped, torch) -> None:
    from asymcache.engine.pinned import PinnedRegion

    f, n = rec.figures, pool.num_blocks
    views = [pool.host_view(mapped.slot(i)) for i in range(n)]
    f.update(_copies("pageable", pool, views))
    rec.save(ctx.out)
    region = PinnedRegion(mapped.buffer, ctx.device)
    try:
        f.update(register=region.status.to_dict(), register_s=region.status.seconds,
                 views_report_pinned=bool(views[0].is_pinned()) if ctx.gpu else False)
        if not region.pinned:
            rec.skip("cuda_host_register", f"needs CUDA: {region.status.reason}" if not ctx.gpu
                     else region.status.reason)
        f.update(_copies("pinned", pool, views))
        f["load_enqueue_share"] = _enqueue_share(pool, views)
        rec.save(ctx.out)
        if ctx.gpu:
            f.update(_host_bandwidth(pool, torch))
            f["overlap_share"] = _overlap(pool, views, torch, ctx)
        else:
            rec.skip("host_bandwidth", "needs CUDA")
            rec.skip("copy_compute_overlap", "needs CUDA")
    finally:
        t0 = time.perf_counter()
        region.close()
        f["unregister_s"] = time.perf_counter() - t0
        del views
    _goal(rec, ctx)


def _timed(fn: Callable[[], None], sync: Callable[[], None]) -> float:
    """Median seconds of ``fn`` (after one warm-up), synchronized."""
    fn()
    sync()
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _copies(tag: str, pool, views) -> dict[str, float]:
    slots = list(range(pool.num_blocks))
    nbytes = pool.num_blocks * pool.bytes_per_block

    def store() -> None:
        pool.mark_compute()
        pool.store(slots, views)

    load_s = _timed(lambda: pool.load(slots, views), pool.sync_copies)
    store_s = _timed(store, pool.sync_copies)
    return {f"{tag}_load_gbs": nbytes / load_s / 1e9, f"{tag}_store_gbs": nbytes / store_s / 1e9}


def _enqueue_share(pool, views) -> float:
    """Host time to issue a load over the time until its copies are done."""
    slots = list(range(pool.num_blocks))
    pool.sync_copies()
    t0 = time.perf_counter()
    pool.load(slots, views)
    issued = time.perf_counter() - t0
    pool.sync_copies()
    return issued / max(time.perf_counter() - t0, 1e-9)


def _host_bandwidth(pool, torch) -> dict[str, float]:
    """One bulk copy each way between a page-locked torch tensor and the device."""
    nbytes = pool.num_blocks * pool.bytes_per_block
    host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
    dev = pool.tensor.view(-1).view(torch.uint8)
    sync = torch.cuda.synchronize
    h2d = _timed(lambda: dev.copy_(host, non_blocking=True), sync)
    d2h = _timed(lambda: host.copy_(dev, non_blocking=True), sync)
    return {"host_h2d_gbs": nbytes / h2d / 1e9, "host_d2h_gbs": nbytes / d2h / 1e9}


def _overlap(pool, views, torch, ctx: StepContext) -> float:
    """Share of the shorter of (copies, matmuls) hidden when both run at once."""
    slots = list(range(pool.num_blocks))
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
    copy_s = _timed(lambda: pool.load(slots, views), pool.sync_copies)
    reps = max(1, round(copy_s / _timed(lambda: a @ a, torch.cuda.synchronize)))

    def compute() -> None:
        for _ in range(reps):
            a @ a

    def both() -> None:
        pool.load(slots, views)
        compute()
        pool.wait_for_copies()

    compute_s = _timed(compute, torch.cuda.synchronize)
    both_s = _timed(both, torch.cuda.synchronize)
    ctx.log(f"overlap: copies {copy_s * 1e3:.1f} ms, matmuls {compute_s * 1e3:.1f} ms, "
            f"both {both_s * 1e3:.1f} ms")
    return (copy_s + compute_s - both_s) / min(copy_s, compute_s)


def _goal(rec: StepRecord, ctx: StepContext) -> None:
    f = rec.figures
    value = None
    if ctx.gpu and "host_h2d_gbs" in f:
        value = min(f["pinned_load_gbs"] / f["host_h2d_gbs"],
                    f["pinned_store_gbs"] / f["host_d2h_gbs"])
    rec.goal(Goal("pinned_copies_vs_host", "pinned CPU-tier copies / host transfer bandwidth",
                  GOAL, value=value, device=ctx.device,
                  note="" if value is not None else "needs CUDA"))
    ctx.log("copies GB/s: " + ", ".join(f"{k} {v:.1f}" for k, v in f.items()
                                         if k.endswith("_gbs")))
