"""Triton ``merge_state``: combine two partial attention results by their log-sum-exp.

Grid ``(T, cdiv(H, BLOCK_H))``; each program merges ``BLOCK_H`` heads of one token:
``o = w_a·o_a + w_b·o_b`` with ``w = exp(lse - logaddexp(lse_a, lse_b))``, in float32.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from asymcache.kernels.triton_common import head_block


@triton.jit
def _weighted(o_ptr, stride_h, stride_d, heads, offs_d, mask, w):
    """``w[:, None] * o`` for one side, zero where ``w == 0`` (garbage there never leaks)."""
    o = tl.load(o_ptr + heads[:, None] * stride_h + offs_d[None, :] * stride_d, mask=mask,
                other=0.0)
    return tl.where(w[:, None] > 0, w[:, None] * o.to(tl.float32), 0.0)


@triton.jit
def _merge_state_kernel(
    o_a_ptr, lse_a_ptr, o_b_ptr, lse_b_ptr, o_ptr, lse_ptr, num_heads,
    stride_ot, stride_oh, stride_od,
    stride_lt, stride_lh,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    valid_h = heads < num_heads
    offs_d = tl.arange(0, BLOCK_D)
    mask = valid_h[:, None] & (offs_d < HEAD_DIM)[None, :]
    lse_off = token * stride_lt + heads * stride_lh
    lse_a = tl.load(lse_a_ptr + lse_off, mask=valid_h, other=float("-inf"))
    lse_b = tl.load(lse_b_ptr + lse_off, mask=valid_h, other=float("-inf"))
    m = tl.maximum(lse_a, lse_b)
    m = tl.where(m == float("-inf"), 0.0, m)
    w_a, w_b = tl.exp(lse_a - m), tl.exp(lse_b - m)
    total = w_a + w_b
    seen = total > 0
    o_off = token * stride_ot
    o = _weighted(o_a_ptr + o_off, stride_oh, stride_od, heads, offs_d, mask, w_a)
    o += _weighted(o_b_ptr + o_off, stride_oh, stride_od, heads, offs_d, mask, w_b)
    o = o / tl.where(seen, total, 1.0)[:, None]
    tl.store(o_ptr + o_off + heads[:, None] * stride_oh + offs_d[None, :] * stride_od,
             o.to(o_ptr.dtype.element_ty), mask=mask)
    tl.store(lse_ptr + lse_off, tl.where(seen, m + tl.log(tl.where(seen, total, 1.0)),
                                         float("-inf")), mask=valid_h)


def merge_state_triton(o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
                       lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Launch ``merge_state`` (inputs validated by ``asymcache.kernels.api.merge_state``).

    ``o_a``, ``o_b`` ``[T, H, D]`` one float dtype; ``lse_a``, ``lse_b`` float32 ``[T, H]``.
    Returns a new contiguous ``o [T, H, D]`` (``o_a``'s dtype) and float32 ``lse [T, H]``.
    """
    o_a, o_b = o_a.contiguous(), o_b.contiguous()
    lse_a, lse_b = lse_a.contiguous(), lse_b.contiguous()
    num_tokens, num_heads, head_dim = o_a.shape
    o, lse = torch.empty_like(o_a), torch.empty_like(lse_a)
    block_h = min(triton.next_power_of_2(num_heads), 16)
    _merge_state_kernel[(num_tokens, triton.cdiv(num_heads, block_h))](
        o_a, lse_a, o_b, lse_b, o, lse, num_heads, *o.stride(), *lse.stride(),
        HEAD_DIM=head_dim, BLOCK_H=block_h, BLOCK_D=head_block(head_dim),
    )
    return o, lse
