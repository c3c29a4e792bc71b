"""Triton paged decode: one query per sequence, split over the KV length, merged by LSE.

Grid ``(S, Hkv, num_splits)``: one program per sequence, KV head and KV split. The ``GROUP``
query heads that share a KV head are the rows of one tile (padded to ``BLOCK_G >= 16`` for
``tl.dot``), so each K/V tile is read from memory once for the whole group. With one split
the kernel writes ``o`` and the LSE directly; with more, it writes float32 partials and
``_merge_splits_kernel`` (grid ``(S, Hq)``) combines them by log-sum-exp.
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

MAX_SPLITS = 64
MIN_SPLIT_TOKENS = 256  # a split shorter than this costs more in merging than it saves


@dataclass(frozen=True)
class DecodeConfig:
    """KV tile length and launch options of the decode kernel."""

    block_n: int = 64
    num_warps: int = 4
    num_stages: int = 2

    def __post_init__(self) -> None:
        if self.block_n < 16 or self.block_n & (self.block_n - 1):
            raise ValueError(
                f"DecodeConfig.block_n must be a power of two >= 16, got {self.block_n}")


def default_num_splits(num_seqs: int, kv_heads: int, max_kv_len: int,
                       device: torch.device) -> int:
    """Enough programs to fill the GPU twice over (SM count from the device), never splits
    shorter than ``MIN_SPLIT_TOKENS``, at most ``MAX_SPLITS``; off CUDA, one split per 4096."""
    longest = max(1, triton.cdiv(max_kv_len, MIN_SPLIT_TOKENS))
    if device.type != "cuda":
        return max(1, min(MAX_SPLITS, triton.cdiv(max_kv_len, 4096)))
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    wanted = triton.cdiv(2 * sms, max(1, num_seqs * kv_heads))
    return max(1, min(wanted, longest, MAX_SPLITS))


@triton.jit
def _msa_decode_kernel(
    q_ptr, pool_ptr, out_ptr, lse_ptr, kv_lens_ptr, block_tables_ptr,
    qk_scale, split_len,
    stride_qs, stride_qh, stride_qd,
    stride_pb, stride_pkv, stride_pt, stride_ph, stride_pd,
    stride_os, stride_oh, stride_osp, stride_od,
    stride_ls, stride_lh, stride_lsp,
    stride_bts, stride_btb,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    seq, kv_head, split = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    kv_len = tl.load(kv_lens_ptr + seq)
    lo = split * split_len
    hi = tl.minimum(lo + split_len, kv_len)
    offs_g = tl.arange(0, BLOCK_G)
    row_valid = offs_g < GROUP
    heads = kv_head * GROUP + offs_g
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    seq64 = seq.to(tl.int64)
    q_rows = q_ptr + seq64 * stride_qs + heads * stride_qh
    q = tl.load(q_rows[:, None] + offs_d[None, :] * stride_qd,
                mask=row_valid[:, None] & mask_d[None, :], other=0.0)
    k_base = pool_ptr + kv_head * stride_ph
    m_i = tl.full([BLOCK_G], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_G], dtype=tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    pos = tl.zeros([BLOCK_G], dtype=tl.int32) + kv_len - 1
    bt_row = block_tables_ptr + seq64 * stride_bts
    m_i, l_i, acc = attend_range(q, k_base, k_base + stride_pkv, bt_row, stride_btb, stride_pb,
                                 stride_pt, stride_pd, pos, lo, hi,
                                 qk_scale, m_i, l_i, acc, offs_d, mask_d, PAGE_SIZE, BLOCK_N,
                                 True, DOT_PRECISION)
    o, lse = finalize(acc, m_i, l_i)
    o_rows = out_ptr + seq64 * stride_os + heads * stride_oh + split * stride_osp
    tl.store(o_rows[:, None] + offs_d[None, :] * stride_od, o.to(out_ptr.dtype.element_ty),
             mask=row_valid[:, None] & mask_d[None, :])
    tl.store(lse_ptr + seq64 * stride_ls + heads * stride_lh + split * stride_lsp, lse,
             mask=row_valid)


@triton.jit
def _merge_splits_kernel(
    part_o_ptr, part_lse_ptr, out_ptr, lse_ptr, num_splits,
    stride_pos, stride_poh, stride_posp, stride_pod,
    stride_pls, stride_plh, stride_plsp,
    stride_os, stride_oh, stride_od,
    stride_ls, stride_lh,
    HEAD_DIM: tl.constexpr, BLOCK_SPLITS: tl.constexpr, BLOCK_D: tl.constexpr,
):
    seq, head = tl.program_id(0).to(tl.int64), tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_SPLITS)
    valid_s = offs_s < num_splits
    offs_d = tl.arange(0, BLOCK_D)
    mask_d = offs_d < HEAD_DIM
    lse_parts = tl.load(part_lse_ptr + seq * stride_pls + head * stride_plh + offs_s * stride_plsp,
                        mask=valid_s, other=float("-inf"))
    m = tl.max(lse_parts, 0)
    m = tl.where(m == float("-inf"), 0.0, m)
    w = tl.exp(lse_parts - m)
    total = tl.sum(w, 0)
    parts = tl.load(part_o_ptr + seq * stride_pos + head * stride_poh
                    + offs_s[:, None] * stride_posp + offs_d[None, :] * stride_pod,
                    mask=valid_s[:, None] & mask_d[None, :], other=0.0)
    seen = total > 0
    o = tl.sum(w[:, None] * parts, 0) / tl.where(seen, total, 1.0)
    tl.store(out_ptr + seq * stride_os + head * stride_oh + offs_d * stride_od,
             o.to(out_ptr.dtype.element_ty), mask=mask_d)
    tl.store(lse_ptr + seq * stride_ls + head * stride_lh,
             tl.where(seen, m + tl.log(tl.where(seen, total, 1.0)), float("-inf")))


def msa_decode_triton(q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                      scale: float, num_splits: int | None, return_lse: bool,
                      config: DecodeConfig | None = None,
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Launch split-KV decode (inputs validated by ``asymcache.kernels.api.msa_decode``).

    ``q [S, Hq, D]`` float16/bfloat16/float32 at positions ``kv_lens - 1``; ``pool`` as in
    ``msa_prefill``. Returns ``o [S, Hq, D]`` like ``q`` and float32 ``lse [S, Hq]`` (or
    ``None``). Partials of a split launch take ``S * Hq * num_splits * (D + 1)`` float32s.
    """
    cfg = config or DecodeConfig(block_n=32 if q.dtype == torch.float32 else 64)
    num_seqs, num_heads, head_dim = q.shape
    kv_heads = pool.shape[4]
    splits = num_splits or default_num_splits(num_seqs, kv_heads, meta.max_kv_len, q.device)
    split_len = triton.cdiv(triton.cdiv(max(meta.max_kv_len, 1), splits), cfg.block_n) * cfg.block_n
    splits = triton.cdiv(max(meta.max_kv_len, 1), split_len)  # drop splits that are always empty
    out = torch.empty_like(q)
    lse = torch.empty((num_seqs, num_heads), dtype=torch.float32, device=q.device)
    if splits == 1:
        part_o, part_lse = out[:, :, None], lse[:, :, None]
    else:
        part_o = torch.empty((num_seqs, num_heads, splits, head_dim), dtype=torch.float32,
                             device=q.device)
        part_lse = torch.empty((num_seqs, num_heads, splits), dtype=torch.float32, device=q.device)
    layer_pool = pool.select(1, layer)
    group = num_heads // kv_heads
    _msa_decode_kernel[(num_seqs, kv_heads, splits)](
        q, layer_pool, part_o, part_lse, meta.kv_lens, meta.block_tables, scale * LOG2_E, split_len,
        *q.stride(), *layer_pool.stride(), *part_o.stride(), *part_lse.stride(),
        *meta.block_tables.stride(),
        GROUP=group, HEAD_DIM=head_dim, PAGE_SIZE=pool.shape[3],
        BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_N=cfg.block_n,
        BLOCK_D=head_block(head_dim), DOT_PRECISION=dot_precision(q.dtype),
        num_warps=cfg.num_warps, num_stages=cfg.num_stages,
    )
    if splits > 1:
        _merge_splits_kernel[(num_seqs, num_heads)](
            part_o, part_lse, out, lse, splits,
            *part_o.stride(), *part_lse.stride(), *out.stride(), *lse.stride(),
            HEAD_DIM=head_dim, BLOCK_SPLITS=triton.next_power_of_2(splits),
            BLOCK_D=head_block(head_dim),
        )
    return out, (lse if return_lse else None)
