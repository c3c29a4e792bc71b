"""Triton ``write_kv``: scatter the query tokens' new K and V into the block-major pool.

Grid ``(T, cdiv(Hkv, BLOCK_H))``: one program per token and group of KV heads copies a
``[BLOCK_H, BLOCK_D]`` tile of K and of V to ``pool[slot // B, layer, 0|1, slot % B]``.
Negative slots are skipped; slots past the pool are dropped (never written out of bounds).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from asymcache.kernels.triton_common import head_block


@triton.jit
def _copy_tile(src_ptr, dst_ptr, stride_sh, stride_sd, stride_dh, stride_dd, heads, offs_d, mask):
    tile = tl.load(src_ptr + heads[:, None] * stride_sh + offs_d[None, :] * stride_sd, mask=mask)
    tl.store(dst_ptr + heads[:, None] * stride_dh + offs_d[None, :] * stride_dd, tile, mask=mask)


@triton.jit
def _write_kv_kernel(
    k_ptr, v_ptr, pool_ptr, slot_ptr, num_slots, num_kv_heads,
    stride_kt, stride_kh, stride_kd,
    stride_vt, stride_vh, stride_vd,
    stride_pb, stride_pkv, stride_pt, stride_ph, stride_pd,
    HEAD_DIM: tl.constexpr, PAGE_SIZE: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + token)
    if (slot < 0) | (slot >= num_slots):
        return
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_D)
    mask = (heads < num_kv_heads)[:, None] & (offs_d < HEAD_DIM)[None, :]
    dst = pool_ptr + (slot // PAGE_SIZE) * stride_pb + (slot % PAGE_SIZE) * stride_pt
    _copy_tile(k_ptr + token * stride_kt, dst, stride_kh, stride_kd, stride_ph, stride_pd,
               heads, offs_d, mask)
    _copy_tile(v_ptr + token * stride_vt, dst + stride_pkv, stride_vh, stride_vd, stride_ph,
               stride_pd, heads, offs_d, mask)


def write_kv_triton(pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                    slot_mapping: torch.Tensor) -> None:
    """Launch ``write_kv`` (inputs validated by ``asymcache.kernels.api.write_kv``).

    ``pool [num_blocks, num_layers, 2, B, Hkv, D]``; ``k``, ``v`` ``[T, Hkv, D]`` of the
    pool's dtype; ``slot_mapping`` int64 ``[T]``. Writes the pool in place.
    """
    num_tokens, kv_heads, head_dim = k.shape
    block_h = min(triton.next_power_of_2(kv_heads), 8)
    layer_pool = pool.select(1, layer)
    _write_kv_kernel[(num_tokens, triton.cdiv(kv_heads, block_h))](
        k, v, layer_pool, slot_mapping, pool.shape[0] * pool.shape[3], kv_heads,
        *k.stride(), *v.stride(), *layer_pool.stride(),
        HEAD_DIM=head_dim, PAGE_SIZE=pool.shape[3], BLOCK_H=block_h,
        BLOCK_D=head_block(head_dim),
    )
