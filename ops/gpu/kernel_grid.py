"""A float16 / bfloat16 grid of the Triton MSA kernels against the float64 reference.

``tests/kernels`` runs one half-precision case; the engine runs bfloat16 on CUDA at Llama-3-8B
heads (32 query / 8 KV of 128). This grid covers those shapes and two others (no GQA with
64-token blocks; one KV head for eight) in both 16-bit dtypes, each for:

* ``prefill``: two sequences, one with three query segments and holes between them (recomputed
  blocks beside resident ones), one whole;
* ``decode``: four sequences of very different lengths, KV split four ways.

Pools are paged with shuffled block tables, the attended layer is layer 1 of 2, and every slot
no sequence owns holds NaN, as in ``tests/kernels/cases.py``. The reference is the kernels'
own float64 path (``backend="reference"``) on the CPU; tolerances as in the kernel tests
(float16 4e-3, bfloat16 3e-2, absolute on o and lse: input rounding of q, K, V and P).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

TOLERANCE = {"float16": 4e-3, "bfloat16": 3e-2}
LAYER = 1


@dataclass(frozen=True)
class GridCase:
    kind: str  # "prefill" or "decode"
    dtype: str
    head_dim: int
    q_heads: int
    kv_heads: int
    block_size: int
    small: bool = False  # short sequences (the CPU rehearsal's interpreter)

    @property
    def name(self) -> str:
        return (f"{self.kind}-{self.dtype}-d{self.head_dim}-h{self.q_heads}/{self.kv_heads}"
                f"-b{self.block_size}")


SHAPES = ((128, 32, 8, 16), (64, 8, 8, 64), (128, 8, 1, 16))  # (D, Hq, Hkv, B)


def grid(dtypes: tuple[str, ...] = ("bfloat16", "float16"),
         shapes: tuple[tuple[int, int, int, int], ...] = SHAPES,
         small: bool = False) -> list[GridCase]:
    return [GridCase(kind, dtype, *shape, small=small) for dtype in dtypes for shape in shapes
            for kind in ("prefill", "decode")]


def _specs(case: GridCase) -> list[tuple[int, list[int]]]:
    """Per sequence ``(kv_len, query positions)``."""
    if case.kind == "decode":
        return [(n, [n - 1]) for n in ((5, 20, 40, 70) if case.small else (5, 200, 1000, 3000))]
    if case.small:
        return [(40, [*range(0, 6), *range(18, 24), *range(36, 40)]), (9, list(range(9)))]
    return [(300, [*range(0, 40), *range(100, 140), *range(260, 300)]), (77, list(range(77)))]


def run_case(case: GridCase, device: str, seed: int = 0) -> dict[str, Any]:
    """Triton against the reference; ``{"case", "o_err", "lse_err", "tol", "ok"}``."""
    import torch

    from asymcache.kernels.api import msa_decode, msa_prefill
    from asymcache.kernels.metadata import AttentionMetadata

    gen = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, case.dtype)
    specs = _specs(case)
    pool, tables = _pool(case, specs, dtype, gen)
    positions, kv_lens = [p for _, p in specs], [n for n, _ in specs]
    meta = AttentionMetadata.for_sequences(positions, kv_lens, tables, case.block_size, device)
    cpu_meta = AttentionMetadata.for_sequences(positions, kv_lens, tables, case.block_size)
    q = torch.randn((meta.num_tokens, case.q_heads, case.head_dim), generator=gen).to(dtype)
    scale = 1.0 / math.sqrt(case.head_dim)
    op = msa_decode if case.kind == "decode" else msa_prefill
    extra = {"num_splits": 4} if case.kind == "decode" else {}
    o, lse = op(q.to(device), pool.to(device), LAYER, meta, scale, return_lse=True,
                backend="triton", **extra)
    ref_o, ref_lse = op(q.double(), pool.double(), LAYER, cpu_meta, scale, return_lse=True,
                        backend="reference")
    o_err = (o.cpu().double() - ref_o).abs().max().item()
    lse_err = (lse.cpu().double() - ref_lse).abs().max().item()
    tol = TOLERANCE[case.dtype]
    return {"case": case.name, "o_err": o_err, "lse_err": lse_err, "tol": tol,
            "ok": bool(o.dtype == dtype and o_err <= tol and lse_err <= tol)}


def _pool(case: GridCase, specs: list[tuple[int, list[int]]], dtype: Any, gen: Any):
    """A NaN pool ``[blocks, 2, 2, B, Hkv, D]`` with random KV in the owned slots of layer 0
    and 1, and shuffled tables padded with -1; returns ``(pool, tables)``."""
    import torch

    b = case.block_size
    needed = [math.ceil(n / b) for n, _ in specs]
    blocks = sum(needed) + 2
    order = torch.randperm(blocks, generator=gen).tolist()
    pool = torch.full((blocks, 2, 2, b, case.kv_heads, case.head_dim), float("nan"), dtype=dtype)
    tables, used = [], 0
    for (kv_len, _), count in zip(specs, needed, strict=True):
        table = order[used:used + count]
        used += count
        for i, block in enumerate(table):
            filled = min(b, kv_len - i * b)
            pool[block, :, :, :filled] = torch.randn(
                (2, 2, filled, case.kv_heads, case.head_dim), generator=gen).to(dtype)
        tables.append([*table, -1])
    return pool, tables
