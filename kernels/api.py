"""The public MSA ops: validate on the host (never reading device memory), then dispatch.

Shapes: ``T`` packed query tokens, ``S`` sequences, ``Hq`` query heads, ``Hkv`` KV heads
(``Hq % Hkv == 0``), ``D`` head dim, ``B`` block size. The pool is the whole block-major tensor
``[num_blocks, num_layers, 2, B, Hkv, D]`` (index 0 = K, 1 = V) in the model dtype; ``q``,
``k``, ``v`` and ``o`` have the pool's dtype (float16/bfloat16 on CUDA, float32 everywhere).
``backend`` is ``None`` (Triton on CUDA, the torch path elsewhere, unless
``ASYMCACHE_KERNEL_BACKEND`` says otherwise), ``"triton"``, ``"torch"`` or ``"reference"``.
"""

from __future__ import annotations

import math

import torch

from asymcache.kernels.backends import resolve_backend
from asymcache.kernels.metadata import AttentionMetadata


def write_kv(pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
             slot_mapping: torch.Tensor, *, backend: str | None = None) -> None:
    """Scatter new K/V into the pool, in place.

    ``k``, ``v``: ``[T, Hkv, D]``, pool dtype. ``slot_mapping``: int64 ``[T]``, slot
    ``block_id * B + offset``; negative slots are skipped. Writes ``pool[block, layer, 0|1,
    offset]`` and nothing else. On CPU an out-of-range slot raises ``ValueError``; on CUDA
    (no host sync) the Triton kernel drops out-of-range writes instead of corrupting memory.
    """
    _check_pool(pool, layer)
    for name, x in (("k", k), ("v", v)):
        if x.dim() != 3 or tuple(x.shape[1:]) != tuple(pool.shape[4:]):
            raise ValueError(f"write_kv: {name} must be [T, {pool.shape[4]}, {pool.shape[5]}] "
                             f"like the pool's heads, got {tuple(x.shape)}")
        _same_kind(f"write_kv: {name}", x, pool)
    if slot_mapping.dtype != torch.int64 or tuple(slot_mapping.shape) != (k.shape[0],):
        raise ValueError(f"write_kv: slot_mapping must be int64 [{k.shape[0]}], got "
                         f"{slot_mapping.dtype} {tuple(slot_mapping.shape)}")
    if k.shape != v.shape or slot_mapping.device != pool.device:
        raise ValueError("write_kv: k and v must match, and slot_mapping be on the pool's device")
    slots = pool.shape[0] * pool.shape[3]
    if slot_mapping.device.type == "cpu" and len(slot_mapping):
        top = int(slot_mapping.max())
        if top >= slots:
            raise ValueError(f"write_kv: slot {top} is past the pool ({slots} slots)")
    if k.shape[0]:
        resolve_backend(backend, pool.device).write_kv(pool, layer, k, v, slot_mapping)


def msa_prefill(q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                scale: float, *, return_lse: bool = False,
                backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Multi-segment attention of packed query tokens over their sequences' paged KV.

    ``q``: ``[T, Hq, D]``, token ``t`` of sequence ``s`` at ``meta.q_positions[t]`` attends to
    KV positions ``j < kv_lens[s]`` with ``j <= q_positions[t]``, read from ``pool[:, layer]``
    through ``meta.block_tables``. Returns ``o [T, Hq, D]`` (``q``'s dtype) and, with
    ``return_lse``, the natural-log log-sum-exp of the scaled scores, float32 ``[T, Hq]``.
    """
    _check_attention("msa_prefill", q, pool, layer, meta, scale, meta.num_tokens)
    if meta.num_tokens == 0:
        o, lse = torch.empty_like(q), q.new_empty(q.shape[:2], dtype=torch.float32)
    else:
        o, lse = resolve_backend(backend, q.device).prefill(q, pool, layer, meta, scale,
                                                            return_lse)
    return (o, lse) if return_lse else o


def msa_decode(q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
               scale: float, *, num_splits: int | None = None, return_lse: bool = False,
               backend: str | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Paged decode: one query per sequence, ``q [S, Hq, D]`` at position ``kv_lens[s] - 1``.

    ``meta`` must be decode-shaped (``cu_seqlens_q = arange(S+1)``, ``q_positions = kv_lens -
    1``). The KV of each sequence is split into ``num_splits`` parts (``None``: the backend
    chooses from the device and lengths) whose partial results are merged by log-sum-exp.
    Returns ``o [S, Hq, D]`` and, with ``return_lse``, float32 ``lse [S, Hq]``.
    """
    if not meta.is_decode:
        raise ValueError("msa_decode: meta must have one query per sequence at kv_lens - 1; "
                         "use msa_prefill for other query patterns")
    if num_splits is not None and (not isinstance(num_splits, int) or num_splits < 1):
        raise ValueError(
            f"msa_decode: num_splits must be a positive int or None, got {num_splits!r}")
    _check_attention("msa_decode", q, pool, layer, meta, scale, meta.num_seqs)
    if meta.num_seqs == 0:
        o, lse = torch.empty_like(q), q.new_empty(q.shape[:2], dtype=torch.float32)
    else:
        o, lse = resolve_backend(backend, q.device).decode(q, pool, layer, meta, scale,
                                                           num_splits, return_lse)
    return (o, lse) if return_lse else o


def merge_state(o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor, lse_b: torch.Tensor,
                *, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two partial attention results over disjoint KV sets.

    ``o_a``, ``o_b``: ``[T, H, D]`` (one float dtype); ``lse_a``, ``lse_b``: float32 ``[T, H]``
    natural-log LSEs. Returns ``(o [T, H, D]`` in ``o_a``'s dtype, ``lse`` float32 ``[T, H])``,
    exactly the attention over the union. A side with ``lse = -inf`` (it saw nothing)
    contributes nothing; if both are ``-inf`` then ``o = 0`` and ``lse = -inf``.
    """
    if o_a.dim() != 3 or o_a.shape != o_b.shape or o_a.dtype != o_b.dtype:
        raise ValueError(f"merge_state: o_a and o_b must be [T, H, D] of one dtype, got "
                         f"{tuple(o_a.shape)} {o_a.dtype} and {tuple(o_b.shape)} {o_b.dtype}")
    for name, lse in (("lse_a", lse_a), ("lse_b", lse_b)):
        if lse.dtype != torch.float32 or lse.shape != o_a.shape[:2]:
            raise ValueError(f"merge_state: {name} must be float32 {tuple(o_a.shape[:2])}, "
                             f"got {lse.dtype} {tuple(lse.shape)}")
    if len({x.device for x in (o_a, lse_a, o_b, lse_b)}) != 1:
        raise ValueError("merge_state: all four tensors must be on one device")
    if o_a.numel() == 0:
        return o_a.clone(), lse_a.clone()
    return resolve_backend(backend, o_a.device).merge(o_a, lse_a, o_b, lse_b)


def _check_pool(pool: torch.Tensor, layer: int) -> None:
    if pool.dim() != 6 or pool.shape[2] != 2:
        raise ValueError("pool must be [num_blocks, num_layers, 2, block_size, Hkv, D], got "
                         f"{tuple(pool.shape)}")
    if not pool.is_floating_point():
        raise ValueError(f"pool must be a float tensor, got {pool.dtype}")
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < pool.shape[1]:
        raise ValueError(f"layer must be an int in [0, {pool.shape[1]}), got {layer!r}")


def _same_kind(what: str, x: torch.Tensor, pool: torch.Tensor) -> None:
    if x.dtype != pool.dtype or x.device != pool.device:
        raise ValueError(f"{what} is {x.dtype} on {x.device}; the pool is {pool.dtype} on "
                         f"{pool.device}: they must match")


def _check_attention(op: str, q: torch.Tensor, pool: torch.Tensor, layer: int,
                     meta: AttentionMetadata, scale: float, rows: int) -> None:
    _check_pool(pool, layer)
    num_blocks, _, _, block_size, kv_heads, head_dim = pool.shape
    if q.dim() != 3 or q.shape[0] != rows or q.shape[2] != head_dim or q.shape[1] % kv_heads:
        raise ValueError(f"{op}: q must be [{rows}, Hq, {head_dim}] with Hq a multiple of "
                         f"Hkv={kv_heads}, got {tuple(q.shape)}")
    _same_kind(f"{op}: q", q, pool)
    if meta.device != pool.device:
        raise ValueError(f"{op}: meta is on {meta.device}, the pool on {pool.device}")
    if not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"{op}: scale must be a positive finite number, got {scale!r}")
    if block_size < meta.min_block_size:
        raise ValueError(f"{op}: meta.block_tables do not cover kv_lens with block_size "
                         f"{block_size} (a sequence needs more blocks than its table lists)")
    if meta.max_block_id >= num_blocks:
        raise ValueError(f"{op}: block id {meta.max_block_id} in meta.block_tables is past the "
                         f"pool's {num_blocks} blocks")
