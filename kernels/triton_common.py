"""Small ``@triton.jit`` helpers shared by the MSA prefill and decode kernels.

Conventions: scores are kept in log2 units (``qk_scale = scale * log2(e)``, ``exp2``), the
running softmax state of a tile of query rows is ``(m_i, l_i, acc)`` in float32, and every
load of KV that a row may not see is masked to zero *before* ``P @ V``, so that whatever bytes
a foreign or unwritten slot holds (NaN included) never reach the output. Pool offsets are
int64: a real pool is far larger than 2**31 elements.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2_E = 1.4426950408889634


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision: exact IEEE for float32 (no TF32 rounding), native otherwise."""
    return "ieee" if dtype == torch.float32 else "tf32"


def head_block(head_dim: int) -> int:
    """The padded head-dim tile: head dims 80 and 96 run in a 128 tile with masked lanes."""
    return max(16, triton.next_power_of_2(head_dim))


@triton.jit
def token_offsets(bt_row_ptr, stride_btb, offs_n, valid_n, stride_pb, stride_pt,
                  PAGE_SIZE: tl.constexpr):
    """int64 pool offsets of logical KV positions ``offs_n [BLOCK_N]`` of one sequence.

    ``bt_row_ptr`` points at the sequence's block-table row; invalid positions read block 0
    (their loads must be masked by ``valid_n``).
    """
    phys = tl.load(bt_row_ptr + (offs_n // PAGE_SIZE) * stride_btb, mask=valid_n, other=0)
    return phys.to(tl.int64) * stride_pb + (offs_n % PAGE_SIZE).to(tl.int64) * stride_pt


@triton.jit
def softmax_update(qk, visible, v, m_i, l_i, acc, MASKED: tl.constexpr):
    """One online-softmax step: fold scores ``qk [M, N]`` (log2 units) and ``v [N, D]`` in."""
    if MASKED:
        qk = tl.where(visible, qk, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(qk, 1))
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)  # rows that saw nothing yet
    alpha = tl.math.exp2(m_i - m_use)
    p = tl.math.exp2(qk - m_use[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def attend_range(q, k_base, v_base, bt_row_ptr, stride_btb, stride_pb, stride_pt, stride_pd,
                 pos, lo, hi, qk_scale, m_i, l_i, acc, offs_d, mask_d,
                 PAGE_SIZE: tl.constexpr, BLOCK_N: tl.constexpr, MASKED: tl.constexpr,
                 DOT_PRECISION: tl.constexpr):
    """Attend query rows ``q [M, BLOCK_D]`` at positions ``pos [M]`` to KV ``[lo, hi)``.

    With ``MASKED`` false every row must see every key of the range (no position mask).
    """
    for start_n in range(lo, hi, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        valid_n = offs_n < hi
        tok = token_offsets(bt_row_ptr, stride_btb, offs_n, valid_n, stride_pb, stride_pt,
                            PAGE_SIZE)
        k = tl.load(k_base + tok[None, :] + offs_d[:, None] * stride_pd,
                    mask=valid_n[None, :] & mask_d[:, None], other=0.0)
        qk = tl.dot(q, k, input_precision=DOT_PRECISION) * qk_scale
        v = tl.load(v_base + tok[:, None] + offs_d[None, :] * stride_pd,
                    mask=valid_n[:, None] & mask_d[None, :], other=0.0)
        visible = (offs_n[None, :] <= pos[:, None]) & valid_n[None, :]
        m_i, l_i, acc = softmax_update(qk, visible, v, m_i, l_i, acc, MASKED)
    return m_i, l_i, acc


@triton.jit
def finalize(acc, m_i, l_i):
    """Normalised output and natural-log LSE; rows that saw nothing give 0 and -inf."""
    seen = l_i > 0
    l_safe = tl.where(seen, l_i, 1.0)
    lse = tl.where(seen, (m_i + tl.math.log2(l_safe)) * 0.6931471805599453, float("-inf"))
    return acc / l_safe[:, None], lse
