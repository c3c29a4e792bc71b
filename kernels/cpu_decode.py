"""Batched paged decode for the torch path: one plan per step, one gather and one SDPA per layer.

The first layer of a step derives a :class:`DecodePlan` from the metadata and keeps it in
``AttentionMetadata.scratch``: sequences cut into chunks of bounded gathered size
(``GATHER_BYTES``), and per chunk the padded length, the pool rows of every K and V position
(layer 0; a layer is the same rows shifted by its stride), the visibility mask and a gather
buffer from the workspace. Each layer then runs, per chunk, one ``index_select`` of K and V
into that buffer and one ``scaled_dot_product_attention`` with the group's query heads as the
rows (GQA without copies). Sequences are padded to the chunk's longest with finite filler that
the mask hides (see ``asymcache.kernels.cpu_gather``). With the LSE asked for, or the KV split, an
explicit float32 path runs instead, merging the splits by log-sum-exp.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asymcache.kernels.cpu_gather import gather_blocks, padded_rows, row_view, scratch
from asymcache.kernels.cpu_math import attend_math, merge_lse
from asymcache.kernels.metadata import AttentionMetadata

GATHER_BYTES = 256 << 20  # gathered K+V of one decode chunk


@dataclass(frozen=True)
class DecodeChunk:
    """Sequences ``[first, first + count)`` padded to ``length`` KV positions."""

    first: int
    count: int
    length: int
    index: torch.Tensor | None  # int64 [2 * count * length]: K then V rows (None: no row view)
    visible: torch.Tensor  # bool [count, 1, 1, length]: j < kv_len
    padded: bool  # some sequence is shorter than ``length`` (the mask matters)


@dataclass(frozen=True)
class DecodePlan:
    """One step's decode layout over one pool (see the module docstring)."""

    pool: torch.Tensor
    rows: torch.Tensor | None  # the pool's row view, or None
    layer_rows: int  # rows between two layers in the row view
    buffer: torch.Tensor  # flat gather buffer for the largest chunk
    chunks: tuple[DecodeChunk, ...]


def decode_plan(pool: torch.Tensor, meta: AttentionMetadata) -> DecodePlan:
    """The step's plan for ``pool`` (derived on the first call of the step, then reused)."""
    plan = meta.scratch.get("decode_plan")
    if plan is not None and plan.pool is pool:
        return plan
    rows = row_view(pool)
    width = pool.shape[4] * pool.shape[5]
    per_token = 2 * width * pool.element_size()
    lens = meta.host_kv_lens
    chunks, first = [], 0
    while first < meta.num_seqs:  # greedy: as many sequences as fit GATHER_BYTES
        count, length = 1, lens[first]
        while first + count < meta.num_seqs and \
                (count + 1) * max(length, lens[first + count]) * per_token <= GATHER_BYTES:
            length = max(length, lens[first + count])
            count += 1
        chunks.append(_chunk(pool, meta, rows, first, count, length))
        first += count
    numel = max(2 * c.count * c.length * width for c in chunks)
    plan = DecodePlan(pool, rows, pool.stride(1) // width, scratch(meta, "kv", numel, pool),
                      tuple(chunks))
    meta.scratch["decode_plan"] = plan
    return plan


def _chunk(pool: torch.Tensor, meta: AttentionMetadata, rows: torch.Tensor | None, first: int,
           count: int, length: int) -> DecodeChunk:
    lens = meta.kv_lens[first:first + count, None].long()
    visible = (torch.arange(length, device=pool.device)[None, :] < lens)[:, None, None]
    index = None if rows is None else padded_rows(meta, pool, first, count, length)
    padded = min(meta.host_kv_lens[first:first + count]) < length
    return DecodeChunk(first, count, length, index, visible, padded)


def gather_chunk(plan: DecodePlan, chunk: DecodeChunk, layer: int, meta: AttentionMetadata
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V ``[count, length, Hkv, D]`` of ``chunk`` at ``layer`` (views of the buffer)."""
    pool = plan.pool
    shape = (chunk.count, chunk.length, *pool.shape[4:])
    if plan.rows is None or chunk.index is None:
        table = meta.block_tables[chunk.first:chunk.first + chunk.count,
                                  :-(-chunk.length // pool.shape[3])]
        k, v = gather_blocks(pool, layer, table, chunk.length, meta)
        for row, kv_len in enumerate(meta.host_kv_lens[chunk.first:chunk.first + chunk.count]):
            k[row, kv_len:] = 0
            v[row, kv_len:] = 0
        return k, v
    out = plan.buffer[:chunk.index.numel() * plan.rows.shape[1]].view(-1, plan.rows.shape[1])
    torch.index_select(plan.rows[layer * plan.layer_rows:], 0, chunk.index, out=out)
    k, v = out.view(2, *shape).unbind(0)
    return k, v


def decode(q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
           scale: float, num_splits: int, return_lse: bool
           ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``q [S, Hq, D]`` → ``o [S, Hq, D]`` (``q``'s dtype) and, with ``return_lse``, float32
    ``lse [S, Hq]``; the KV split into ``num_splits`` parts on the explicit path."""
    plan = decode_plan(pool, meta)
    outs, lses = [], []
    for c in plan.chunks:
        k, v = gather_chunk(plan, c, layer, meta)
        n, hq, d = c.count, q.shape[1], q.shape[2]
        qh = q[c.first:c.first + n].view(n, k.shape[2], hq // k.shape[2], d)  # group = rows
        kh, vh = k.permute(0, 2, 1, 3), v.permute(0, 2, 1, 3)  # [n, Hkv, L, D]
        if not return_lse and num_splits == 1:
            o = F.scaled_dot_product_attention(
                qh, kh, vh, attn_mask=c.visible if c.padded else None, scale=scale)
            outs.append(o.reshape(n, hq, d))
            continue
        o, lse = None, None
        step = -(-c.length // num_splits)
        for a in range(0, c.length, step):
            o_p, lse_p = attend_math(qh, kh[:, :, a:a + step], vh[:, :, a:a + step],
                                     c.visible[..., a:a + step], scale)
            o, lse = (o_p, lse_p) if o is None else merge_lse(o, lse, o_p, lse_p)
        outs.append(o.reshape(n, hq, d).to(q.dtype))
        lses.append(lse.reshape(n, hq))
    out = outs[0] if len(outs) == 1 else torch.cat(outs)
    if not return_lse:
        return out, None
    return out, lses[0] if len(lses) == 1 else torch.cat(lses)
