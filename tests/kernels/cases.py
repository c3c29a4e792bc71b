"""Test cases for the MSA kernels: segment patterns, shapes, and a paged pool built from them.

Every pool starts as NaN; only the KV positions a sequence owns (``j < kv_len`` in its blocks)
get data, and block tables are a seeded shuffle of the pool's blocks (never physical order),
padded with ``-1`` columns. Layer 1 of a two-layer pool is attended, so layer offsets matter.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from asymcache.kernels.metadata import AttentionMetadata

DEVICE = torch.device("cuda" if os.environ.get("ASYMCACHE_TEST_CUDA") == "1" else "cpu")
LAYER = 1

# Tolerances against the float64 reference (max abs error on o; LSE to the same atol).
# float32: a few ulps of O(1) values accumulated over a few hundred keys; 16-bit: the
# input rounding of q, K, V and P (fp16 ~1e-3 relative, bf16 ~8e-3).
TOLERANCE = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


@dataclass(frozen=True)
class Shape:
    head_dim: int
    block_size: int
    q_heads: int
    kv_heads: int

    def __str__(self) -> str:
        return f"d{self.head_dim}-b{self.block_size}-g{self.q_heads // self.kv_heads}"


HEADS_BY_GQA = {1: (2, 2), 4: (8, 2), 8: (8, 1)}  # ratio -> (Hq, Hkv)
SHAPES = [Shape(d, b, *HEADS_BY_GQA[g])
          for d in (64, 128, 80, 96) for b in (16, 64) for g in (1, 4, 8)]


def patterns(block_size: int) -> dict[str, list[tuple[int, list[int]]]]:
    """Named query patterns: per sequence ``(kv_len, query positions)``."""
    b = block_size
    n = 2 * b + 5
    return {
        "one_segment": [(n, list(range(n)))],
        "hole_at_start": [(n, [*range(b // 2), *range(b + 3, n)])],
        "hole_in_middle": [(n, [*range(b - 2, b + 6), *range(n - 4, n)])],
        "hole_at_end": [(n, list(range(b + 1, n)))],
        "many_tiny_segments": [(n, [p for p in range(n) if p % 7 in (0, 3, 4)])],
        "crossing_blocks": [(n + b, [*range(b - 3, b + 4), *range(2 * b - 1, 2 * b + 2),
                                     n + b - 1])],
        "mixed_lengths": [(5, list(range(5))), (3 * b + 9, [*range(b // 2, b + 3),
                                                            *range(3 * b + 5, 3 * b + 9)]),
                          (b, [b - 1]), (b + 1, list(range(b - 2, b + 1)))],
        "decode_like": [(n, [n - 1]), (7, [6]), (2 * b, [2 * b - 1])],
    }


PATTERNS = list(patterns(16))


@dataclass
class Case:
    q: torch.Tensor  # [T, Hq, D]
    pool: torch.Tensor  # [num_blocks, 2, 2, B, Hkv, D]
    meta: AttentionMetadata
    scale: float


def build_pool(specs: list[tuple[int, list[int]]], shape: Shape, dtype: torch.dtype,
               gen: torch.Generator, spare_blocks: int = 3):
    """A NaN pool with random KV in the owned slots and shuffled tables; returns
    ``(pool, tables)``."""
    b = shape.block_size
    needed = [math.ceil(kv_len / b) for kv_len, _ in specs]
    num_blocks = sum(needed) + spare_blocks
    order = torch.randperm(num_blocks, generator=gen).tolist()
    pool = torch.full((num_blocks, 2, 2, b, shape.kv_heads, shape.head_dim), float("nan"),
                      dtype=dtype)
    tables, used = [], 0
    for (kv_len, _), count in zip(specs, needed, strict=True):
        table = order[used:used + count]
        used += count
        for i, block in enumerate(table):
            filled = min(b, kv_len - i * b)
            pool[block, :, :, :filled] = torch.randn(
                (2, 2, filled, shape.kv_heads, shape.head_dim), generator=gen).to(dtype)
        tables.append([*table, -1, -1])
    return pool.to(DEVICE), tables


def make_case(pattern: str, shape: Shape, dtype: torch.dtype = torch.float32,
              seed: int = 0) -> Case:
    return make_case_from_specs(patterns(shape.block_size)[pattern], shape, dtype, seed)


def decode_case(kv_lens: list[int], shape: Shape, dtype: torch.dtype = torch.float32,
                seed: int = 0) -> Case:
    """One query per sequence at ``kv_len - 1``."""
    return make_case_from_specs([(n, [n - 1]) for n in kv_lens], shape, dtype, seed)


def make_case_from_specs(specs: list[tuple[int, list[int]]], shape: Shape,
                         dtype: torch.dtype = torch.float32, seed: int = 0) -> Case:
    gen = torch.Generator().manual_seed(seed)
    pool, tables = build_pool(specs, shape, dtype, gen)
    meta = AttentionMetadata.for_sequences([p for _, p in specs], [n for n, _ in specs], tables,
                                           shape.block_size, device=DEVICE)
    q = torch.randn((meta.num_tokens, shape.q_heads, shape.head_dim), generator=gen).to(dtype)
    return Case(q.to(DEVICE), pool, meta, 1.0 / math.sqrt(shape.head_dim))


def reference(case: Case, *, decode: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 dense-mask reference of a case: ``(o, lse)`` in float64, on the CPU."""
    from asymcache.kernels.api import msa_decode, msa_prefill

    op = msa_decode if decode else msa_prefill
    meta = case.meta
    if DEVICE.type != "cpu":
        meta = AttentionMetadata(*(t.cpu() for t in (
            meta.cu_seqlens_q, meta.q_positions, meta.kv_lens, meta.block_tables,
            meta.slot_mapping)))
    return op(case.q.cpu().double(), case.pool.cpu().double(), LAYER, meta, case.scale,
              return_lse=True, backend="reference")


def assert_matches(o: torch.Tensor, lse: torch.Tensor | None, ref: tuple[torch.Tensor, ...],
                   dtype: torch.dtype) -> None:
    tol = TOLERANCE[dtype]
    err = (o.cpu().double() - ref[0]).abs().max().item()
    assert err <= tol, f"max |o - reference| = {err:.3g} > {tol:g}"
    if lse is not None:
        assert lse.dtype == torch.float32
        lse_err = (lse.cpu().double() - ref[1]).abs().max().item()
        assert lse_err <= tol, f"max |lse - reference| = {lse_err:.3g} > {tol:g}"
