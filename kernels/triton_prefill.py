"""Triton MSA prefill: packed query tokens at arbitrary positions over paged KV.

Grid ``(cdiv(max_q_len, BLOCK_M), Hq, S)``: one program per tile of ``BLOCK_M`` consecutive
query tokens of one sequence and one query head (tiles past a sequence's query count exit at
once). A tile walks the KV of its sequence in ``BLOCK_N`` steps through the block table, in two
phases: keys every row of the tile sees (``j <= min position``) without a mask, then the keys
up to ``min(kv_len, max position + 1)`` with the ``j <= q_pos`` mask. KV tiles no row of the
tile can see are never loaded. Online softmax in float32, ``P @ V`` in the input dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from asymcache.kernels.metadata import AttentionMetadata
from asymcache.kernels.triton_common import (
    LOG2_E,
    attend_range,
    dot_precision,
    finalize,
    head_block,
)


@dataclass(frozen=True)
class PrefillConfig:
    """Tile sizes and launch options of the prefill kernel (powers of two, ``>= 16``)."""

    block_m: int
    block_n: int
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        for name in ("block_m", "block_n"):
            value = getattr(self, name)
            if value < 16 or value & (value - 1):
                raise ValueError(f"PrefillConfig.{name} must be a power of two >= 16, got {value}")


def prefill_config(head_dim: int, dtype: torch.dtype, max_q_len: int) -> PrefillConfig:
    """Tiles for Ampere/Hopper: 128x64 for 16-bit inputs (8 warps past head_dim 64), 64x32 for
    float32 (its tiles take twice the shared memory); 64-row tiles when every sequence has at
    most 64 query tokens (short recompute segments, decode-like batches)."""
    if dtype == torch.float32:
        return PrefillConfig(block_m=64 if max_q_len > 32 else 32, block_n=32, num_warps=4)
    block_m = 128 if max_q_len > 64 else 64
    return PrefillConfig(block_m=block_m, block_n=64, num_warps=8 if head_dim > 64 else 4,
                         num_stages=3)


@triton.jit
def _load_positions(q_pos_ptr, offs_m, row_valid):
    """Positions of a tile's rows; padding rows copy the largest valid position."""
    pos = tl.load(q_pos_ptr + offs_m, mask=row_valid, other=0)
    pos_min = tl.min(tl.where(row_valid, pos, 2147483647), 0)
    pos_max = tl.max(tl.where(row_valid, pos, -1), 0)
    return tl.where(row_valid, pos, pos_max), pos_min, pos_max


@triton.jit
def _msa_prefill_kernel(
    q_ptr, pool_ptr, out_ptr, lse_ptr,
    cu_seqlens_ptr, q_pos_ptr, kv_lens_ptr, block_tables_ptr,
    qk_scale,
    stride_qt, stride_qh, stride_qd,
    stride_pb, stride_pkv, stride_pt, stride_ph, stride_pd,
    stride_ot, stride_oh, stride_od,
    stride_lt, stride_lh,
    stride_bts, stride_btb,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    RETURN_LSE: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_m, head, seq = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    q_start = tl.load(cu_seqlens_ptr + seq)
    q_end = tl.load(cu_seqlens_ptr + seq + 1)
    if pid_m * BLOCK_M >= q_end - q_start:
        return
    offs_m = q_start + pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    row_valid = offs_m < q_end
    pos, pos_min, pos_max = _load_positions(q_pos_ptr, offs_m, row_valid)
    kv_len = tl.load(kv_lens_ptr + seq)
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    rows = offs_m.to(tl.int64)
    q = tl.load(q_ptr + rows[:, None] * stride_qt + head * stride_qh + offs_d[None, :] * stride_qd,
                mask=row_valid[:, None] & mask_d[None, :], other=0.0)
    k_base = pool_ptr + (head // GROUP) * stride_ph
    v_base = k_base + stride_pkv
    bt_row = block_tables_ptr + seq.to(tl.int64) * stride_bts
    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    full_hi = (pos_min + 1) // BLOCK_N * BLOCK_N
    hi = tl.minimum(kv_len, pos_max + 1)
    m_i, l_i, acc = attend_range(q, k_base, v_base, bt_row, stride_btb, stride_pb, stride_pt,
                                 stride_pd, pos, 0, full_hi, qk_scale, m_i, l_i, acc, offs_d,
                                 mask_d, PAGE_SIZE, BLOCK_N, False, DOT_PRECISION)
    m_i, l_i, acc = attend_range(q, k_base, v_base, bt_row, stride_btb, stride_pb, stride_pt,
                                 stride_pd, pos, full_hi, hi, qk_scale, m_i, l_i, acc, offs_d,
                                 mask_d, PAGE_SIZE, BLOCK_N, True, DOT_PRECISION)
    o, lse = finalize(acc, m_i, l_i)
    tl.store(out_ptr + rows[:, None] * stride_ot + head * stride_oh + offs_d[None, :] * stride_od,
             o.to(out_ptr.dtype.element_ty), mask=row_valid[:, None] & mask_d[None, :])
    if RETURN_LSE:
        tl.store(lse_ptr + rows * stride_lt + head * stride_lh, lse, mask=row_valid)


def msa_prefill_triton(q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                       scale: float, return_lse: bool, config: PrefillConfig | None = None,
                       ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch the prefill kernel (inputs validated by ``asymcache.kernels.api.msa_prefill``).

    ``q [T, Hq, D]`` float16/bfloat16/float32, ``pool [num_blocks, num_layers, 2, B, Hkv, D]``
    of ``q``'s dtype. Returns ``o [T, Hq, D]`` like ``q`` and float32 ``lse [T, Hq]`` (or
    ``None``). ``config`` overrides the tile sizes (tests use small tiles).
    """
    num_tokens, num_heads, head_dim = q.shape
    cfg = config or prefill_config(head_dim, q.dtype, meta.max_q_len)
    out = torch.empty_like(q)
    lse = torch.empty((num_tokens, num_heads), dtype=torch.float32, device=q.device)
    layer_pool = pool.select(1, layer)  # [num_blocks, 2, B, Hkv, D], a strided view
    grid = (triton.cdiv(meta.max_q_len, cfg.block_m), num_heads, meta.num_seqs)
    _msa_prefill_kernel[grid](
        q, layer_pool, out, lse,
        meta.cu_seqlens_q, meta.q_positions, meta.kv_lens, meta.block_tables,
        scale * LOG2_E,
        *q.stride(), *layer_pool.stride(), *out.stride(), *lse.stride(),
        *meta.block_tables.stride(),
        GROUP=num_heads // pool.shape[4], HEAD_DIM=head_dim, PAGE_SIZE=pool.shape[3],
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=head_block(head_dim),
        RETURN_LSE=return_lse, DOT_PRECISION=dot_precision(q.dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    return out, (lse if return_lse else None)
