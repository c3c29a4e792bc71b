"""Gathering a layer's K/V out of the paged pool for the torch path, and writing it in.

Copies land in buffers of ``AttentionMetadata.workspace``: every layer of a step, and every
step whose metadata gets the same workspace (the engine's runner passes one), reuses them
instead of allocating, and page-faulting, fresh memory. A gathered tensor is valid until the
next gather. Row indices are derived once per step and serve every layer: a layer's rows are
the same rows shifted by the layer's stride.

* ``gather_blocks`` copies whole blocks (prefill: one sequence's blocks, cut at its KV length).
* ``padded_rows`` gives ``S`` sequences a common length for batched decode (gathered by
  ``asymcache.kernels.cpu_decode``, K and V in one ``index_select``): positions past a sequence's KV
  length read its position 0, finite bytes (or zeros when the pool's strides do not allow a
  row view): never the bytes of a foreign or unwritten slot, which may be NaN. Callers mask
  them.
* ``scatter_rows`` writes a layer's new K/V at their slots (two ``index_copy_``).
"""

from __future__ import annotations

import torch

from asymcache.kernels.metadata import AttentionMetadata


def scratch(meta: AttentionMetadata, name: str, numel: int, like: torch.Tensor) -> torch.Tensor:
    """A flat buffer of ``numel`` elements of ``like``'s dtype and device from the metadata's
    workspace (grown when a call needs more; reused across layers and steps)."""
    key = f"{name}:{like.dtype}:{like.device}"
    buf = meta.workspace.get(key)
    if buf is None or buf.numel() < numel:
        buf = like.new_empty(numel)
        meta.workspace[key] = buf
    return buf[:numel]


def gather_blocks(pool: torch.Tensor, layer: int, table: torch.Tensor, num_tokens: int,
                  meta: AttentionMetadata) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V ``[rows, num_tokens, Hkv, D]`` of the block-table rows ``table``
    (``[rows, n_blocks]``; ``-1`` reads block 0, whose tokens the caller must mask)."""
    block_size, heads, dim = pool.shape[3:]
    ids = table.clamp(min=0).reshape(-1).long()
    shape = (table.shape[0], table.shape[1] * block_size, heads, dim)
    numel = ids.numel() * block_size * heads * dim
    gathered = []
    for half, name in ((0, "k"), (1, "v")):
        out = scratch(meta, name, numel, pool).view(ids.numel(), block_size, heads, dim)
        torch.index_select(pool[:, layer, half], 0, ids, out=out)
        gathered.append(out.view(shape)[:, :num_tokens])
    return gathered[0], gathered[1]


def row_view(pool: torch.Tensor) -> torch.Tensor | None:
    """The pool as ``[rows, Hkv * D]``, one row per token slot of any block, layer and half, or
    ``None`` if its strides do not allow that view (a contiguous pool always does)."""
    heads, dim = pool.shape[4:]
    if pool.is_contiguous():
        return pool.view(-1, heads * dim)
    strides = pool.stride()
    width = heads * dim
    if strides[5] != 1 or strides[4] != dim or strides[3] != width:
        return None
    if any(s % width for s in strides[:3]):
        return None
    last = sum((n - 1) * s for n, s in zip(pool.shape[:4], strides[:4], strict=True))
    return pool.as_strided((last // width + 1, width), (width, 1))


def layer_rows(rows: torch.Tensor, pool: torch.Tensor, layer: int, half: int) -> torch.Tensor:
    """``rows`` (a :func:`row_view`) starting at layer ``layer``, half ``half`` (0 K, 1 V) of
    block 0, so that layer-0 K row indices address that layer and half (a view)."""
    width = rows.shape[1]
    start = (layer * pool.stride(1) + half * pool.stride(2)) // width
    return rows[start:]


def padded_rows(meta: AttentionMetadata, pool: torch.Tensor, first: int, count: int,
                length: int) -> torch.Tensor:
    """Rows (``row_view`` units, relative to layer 0) of K then V of each position
    ``< length`` of sequences ``[first, first + count)``, int64 ``[2 * count * length]``;
    positions past a KV length point at position 0 (finite filler)."""
    width = pool.shape[4] * pool.shape[5]
    block_size = pool.shape[3]
    pos = torch.arange(length, device=pool.device)[None, :]
    pos = torch.where(pos < meta.kv_lens[first:first + count, None].long(), pos, 0)
    blocks = meta.block_tables[first:first + count].long().gather(1, pos // block_size)
    k_rows = (blocks * (pool.stride(0) // width)
              + (pos % block_size) * (pool.stride(3) // width)).reshape(-1)
    return torch.cat((k_rows, k_rows + pool.stride(2) // width))


def scatter_rows(rows: torch.Tensor, pool: torch.Tensor, layer: int, k: torch.Tensor,
                 v: torch.Tensor, slot_mapping: torch.Tensor) -> None:
    """Write ``k``/``v`` ``[T, Hkv, D]`` at ``slot_mapping`` (int64 ``[T]``, all ``>= 0``) of
    ``layer`` through the pool's row view ``rows`` (in place)."""
    block_size, width = pool.shape[3], rows.shape[1]
    assert pool.stride(3) == width, "a row view has one row per token"
    # slot = block * B + offset and row = block * per_block + offset: row = slot + block * (..)
    blocks = torch.div(slot_mapping, block_size, rounding_mode="floor")
    index = blocks.mul_(pool.stride(0) // width - block_size).add_(slot_mapping)
    layer_rows(rows, pool, layer, 0).index_copy_(0, index, k.reshape(-1, width))
    layer_rows(rows, pool, layer, 1).index_copy_(0, index, v.reshape(-1, width))
