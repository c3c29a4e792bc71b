"""Measuring this device for the cost model (``asymcache profile`` and ``cost_model="auto"``).

What is measured, each the fastest of a few repeats after a warm-up:

* forward passes of ``n`` new tokens after ``p`` cached ones over the real paged pool, for a
  grid of ``(p, n)``; ``fit_prefill`` turns them into ``pass_s``, ``linear_s_per_token`` and
  ``attn_s_per_token_position`` (``asymcache.cacheserver.policy.cost``);
* ``segment_s``: the same query tokens in ``k`` segments against one, per extra segment;
* the CPU tier link: copying host blocks into the pool (bandwidth from a batch, latency from
  one block);
* the disk link, when a folder is given: blocks written to a file there (fsync'd), read back
  and copied into the pool; on a machine with free memory the read is served by the page cache,
  which is what an engine on this machine sees.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from asymcache.cacheserver.policy.cost import CostModel, TierLink, fit_prefill
from asymcache.engine.kv_pool import KVPool
from asymcache.kernels.metadata import AttentionMetadata


@dataclass(frozen=True)
class ProfileGrid:
    """Shapes and repeats of a measurement."""

    positions: tuple[int, ...]
    sizes: tuple[int, ...]
    repeats: int
    load_blocks: int
    segments: int = 8


QUICK = ProfileGrid(positions=(0, 256), sizes=(16, 128), repeats=2, load_blocks=8)
FULL = ProfileGrid(positions=(0, 256, 1024, 2048), sizes=(16, 64, 256, 512), repeats=3,
                   load_blocks=64)


def measure_cost_model(model: torch.nn.Module, pool: KVPool, grid: ProfileGrid,
                       disk_dir: str | Path | None = None, model_name: str = "") -> CostModel:
    """A :class:`CostModel` of ``model`` on ``pool``'s device (side effect: overwrites pool
    slots; call it before serving)."""
    shapes = _shapes(grid, pool.num_blocks * pool.layout.block_size, pool.layout.block_size)
    samples = [(p, n, _time(lambda p=p, n=n: _pass(model, pool, [range(p, p + n)]), grid.repeats,
                            pool.device)) for p, n in shapes]
    coef = fit_prefill(samples)
    links = [_cpu_link(pool, grid)]
    if disk_dir is not None:
        links.append(_disk_link(pool, grid, Path(disk_dir)))
    return CostModel(
        device=_device_name(pool.device), model=model_name or "model",
        kv_bytes_per_token=pool.layout.bytes_per_token, segment_s=_segment_s(model, pool, grid),
        load=tuple(links), gpu_kv_bytes=pool.num_blocks * pool.bytes_per_block,
        source=f"asymcache profile, {time.strftime('%Y-%m-%d')}", **coef)


def _shapes(grid: ProfileGrid, cap: int, block_size: int) -> list[tuple[int, int]]:
    """The grid's ``(position, tokens)`` pairs that fit a pool of ``cap`` tokens, or a smaller
    grid scaled to the pool (two positions × two sizes, at least what a fit needs)."""
    shapes = [(p, n) for p in grid.positions for n in grid.sizes if p + n <= cap]
    if len({p for p, _ in shapes}) >= 2 and len({n for _, n in shapes}) >= 2:
        return shapes
    if cap < 4 * block_size:
        raise ValueError(f"a pool of {cap} tokens is too small to profile; give a cost model "
                         f"(a preset or a profile file) instead of 'auto'")
    small, large = block_size, cap // 2 // block_size * block_size
    return [(p, n) for p in (0, cap // 2) for n in (small, large) if p + n <= cap]


def _pass(model: torch.nn.Module, pool: KVPool, segments: list[range]) -> None:
    positions = [p for seg in segments for p in seg]
    kv_len = positions[-1] + 1
    bs = pool.layout.block_size
    table = list(range(-(-kv_len // bs)))
    meta = AttentionMetadata.for_sequences([positions], [kv_len], [table], bs, pool.device)
    ids = torch.randint(0, 100, (len(positions),), device=pool.device)
    model(ids, meta, pool.tensor, torch.tensor([len(positions) - 1], device=pool.device))


def _time(fn: Callable[[], object], repeats: int, device: torch.device) -> float:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(time.perf_counter() - t0)
    return min(out)  # the least disturbed run: other processes only ever add time


def _segment_s(model: torch.nn.Module, pool: KVPool, grid: ProfileGrid) -> float:
    bs, k = pool.layout.block_size, grid.segments
    span = min(pool.num_blocks * bs, 2 * k * bs)
    if span < 2 * k * bs:
        return 0.0
    one = _time(lambda: _pass(model, pool, [range(span - k * bs, span)]), grid.repeats, pool.device)
    many = _time(lambda: _pass(model, pool, [range(2 * i * bs + bs, 2 * i * bs + 2 * bs)
                                             for i in range(k)]), grid.repeats, pool.device)
    return max(0.0, (many - one) / (k - 1))


def _host_blocks(pool: KVPool, n: int) -> list[torch.Tensor]:
    host = torch.zeros((n, *pool.layout.block_shape), dtype=pool.dtype,
                       pin_memory=pool.device.type == "cuda")
    return list(host.unbind(0))


def _link(tier: str, pool: KVPool, grid: ProfileGrid, fetch: Callable[[int], None]) -> TierLink:
    n = min(grid.load_blocks, pool.num_blocks)
    batch = _time(lambda: fetch(n), grid.repeats, pool.device)
    single = _time(lambda: fetch(1), grid.repeats, pool.device)
    bandwidth = n * pool.bytes_per_block / max(batch, 1e-9)
    latency = max(0.0, single - pool.bytes_per_block / bandwidth)
    return TierLink(tier, bandwidth, latency)


def _cpu_link(pool: KVPool, grid: ProfileGrid) -> TierLink:
    src = _host_blocks(pool, min(grid.load_blocks, pool.num_blocks))
    return _link("cpu", pool, grid, lambda n: (pool.load(list(range(n)), src[:n]),
                                                pool.sync_copies()))


def _disk_link(pool: KVPool, grid: ProfileGrid, folder: Path) -> TierLink:
    n = min(grid.load_blocks, pool.num_blocks)
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="asymcache-profile-", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            for block in _host_blocks(pool, n):
                f.write(block.view(torch.uint8).numpy().tobytes())
            f.flush()
            os.fsync(f.fileno())

        def fetch(k: int) -> None:
            with open(name, "rb", buffering=0) as f:
                bufs = [bytearray(f.read(pool.bytes_per_block)) for _ in range(k)]
            pool.load(list(range(k)), [pool.host_view(b) for b in bufs])
            pool.sync_copies()

        return _link("disk", pool, grid, fetch)
    finally:
        os.unlink(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, torch {torch.__version__})"
