"""The fast torch path (``backend="torch"``): what the engine runs on a CPU.

Per layer, each sequence's blocks are gathered once (one ``index_select`` for K, one for V;
``asymcache.kernels.cpu_gather``) and attended with ``scaled_dot_product_attention``: ``is_causal``
when the queries are the whole sequence, no mask for a single last-position query, otherwise
a ``j <= q_pos`` mask in row chunks whose keys end at each chunk's last position. Decode
batches sequences, padded with finite filler that the mask hides (never foreign bytes), one
gather and one SDPA per layer (``asymcache.kernels.cpu_decode``). When the LSE is asked for, or
decode
is split, an explicit float32 matmul/softmax path runs (``asymcache.kernels.cpu_math``). Working
memory
is bounded by chunking query rows and sequences (``MASK_ELEMS``, ``SCORE_BYTES``,
``asymcache.kernels.cpu_decode.GATHER_BYTES``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from asymcache.kernels.backends import Backend
from asymcache.kernels.cpu_decode import decode
from asymcache.kernels.cpu_gather import gather_blocks, row_view, scatter_rows
from asymcache.kernels.cpu_math import attend_math, merge_lse
from asymcache.kernels.metadata import AttentionMetadata

MASK_ELEMS = 1 << 24  # booleans of one mask chunk (16 MiB)
SCORE_BYTES = 64 << 20  # float32 scores of one math-path chunk
ROWS = 128  # query rows per masked chunk; a chunk's keys end at its last query's position
MIN_ROWS = 32  # below this, SDPA on CPU costs more per row than a cut at a segment saves


def _to_heads(x: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """``[n, Hq, D]`` -> ``[Hkv, G, n, D]`` (a view)."""
    n, hq, d = x.shape
    return x.view(n, kv_heads, hq // kv_heads, d).permute(1, 2, 0, 3)


def _chunks(host_pos: torch.Tensor, max_rows: int, length: int):
    """Query row ranges ``(a, b)`` of one sequence and the key bound ``hi`` of each.

    Keys past a chunk's last (largest) position are never computed, and a chunk of at least
    ``MIN_ROWS`` rows ends where the next segment starts, so that the rows before a jump in
    position do not compute the keys of the gap (SDPA on CPU does not skip masked blocks)."""
    n, rows = len(host_pos), max(1, min(ROWS, max_rows))
    shortest = min(MIN_ROWS, rows)
    starts = ((host_pos[1:] != host_pos[:-1] + 1).nonzero().flatten() + 1).tolist()
    a, i = 0, 0
    while a < n:
        b = min(n, a + rows)
        while i < len(starts) and starts[i] < a + shortest:
            i += 1
        if i < len(starts) and starts[i] < b:
            b = starts[i]
        yield a, b, min(length, int(host_pos[b - 1]) + 1)
        a = b


def _prefill_math(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                  host_pos: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One sequence with LSE: ``q [n, Hq, D]``, ``k``/``v`` ``[Hkv, L, D]``, ``pos [n]`` ->
    float32 ``o [n, Hq, D]`` and ``lse [n, Hq]``, in row chunks (bounded scores)."""
    _, hq, d = q.shape
    length = k.shape[1]
    outs, lses = [], []
    for a, b, hi in _chunks(host_pos, SCORE_BYTES // (4 * hq * max(length, 1)), length):
        visible = torch.arange(hi, device=q.device) <= pos[a:b, None]
        o, lse = attend_math(_to_heads(q[a:b], k.shape[0]), k[:, None, :hi], v[:, None, :hi],
                             visible, scale)
        outs.append(o.permute(2, 0, 1, 3).reshape(-1, hq, d))
        lses.append(lse.permute(2, 0, 1).reshape(-1, hq))
    return torch.cat(outs), torch.cat(lses)


def _prefill_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: torch.Tensor,
                  host_pos: torch.Tensor, scale: float, suffix: bool) -> torch.Tensor:
    """One sequence through SDPA: ``q [n, Hq, D]``, ``k``/``v`` ``[Hkv, L, D]`` -> ``[n, Hq, D]``.

    ``suffix`` says the queries are positions ``[L - n, L)``: the whole sequence is then plain
    causal attention, and a single query needs no mask. Otherwise row chunks with a mask."""
    n, length = q.shape[0], k.shape[1]
    qh, kh, vh = q.permute(1, 0, 2)[None], k[None], v[None]
    gqa = q.shape[1] != k.shape[0]
    if suffix and (n == length or n == 1):
        o = F.scaled_dot_product_attention(qh, kh, vh, is_causal=n > 1, scale=scale,
                                           enable_gqa=gqa)
        return o[0].permute(1, 0, 2)
    chunks = []
    for a, b, hi in _chunks(host_pos, MASK_ELEMS // max(length, 1), length):
        mask = torch.arange(hi, device=q.device) <= pos[a:b, None]
        chunks.append(F.scaled_dot_product_attention(
            qh[:, :, a:b], kh[:, :, :hi], vh[:, :, :hi], attn_mask=mask, scale=scale,
            enable_gqa=gqa))
    return torch.cat(chunks, dim=2)[0].permute(1, 0, 2)


class TorchBackend(Backend):
    """Gather + SDPA on any torch device; the engine's path on CPU."""

    name = "torch"

    def write_kv(self, pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        keep = slot_mapping >= 0
        if not bool(keep.all()):
            slot_mapping, k, v = slot_mapping[keep], k[keep], v[keep]
        rows = row_view(pool)
        if rows is not None:
            scatter_rows(rows, pool, layer, k, v, slot_mapping)
            return
        block_size = pool.shape[3]
        blocks, offsets = slot_mapping // block_size, slot_mapping % block_size
        pool[blocks, layer, 0, offsets] = k
        pool[blocks, layer, 1, offsets] = v

    def prefill(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                scale: float, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = torch.empty_like(q)
        lse = q.new_empty(q.shape[:2], dtype=torch.float32) if return_lse else None
        cu, block_size = meta.host_cu_seqlens, pool.shape[3]
        for s in range(meta.num_seqs):
            if cu[s] == cu[s + 1]:
                continue
            kv_len = meta.host_kv_lens[s]
            table = meta.block_tables[s:s + 1, :-(-kv_len // block_size)]
            k, v = gather_blocks(pool, layer, table, kv_len, meta)
            rows = slice(cu[s], cu[s + 1])
            q_s, pos, host_pos = q[rows], meta.q_positions[rows], meta.host_q_positions[rows]
            k_s, v_s = k[0].permute(1, 0, 2), v[0].permute(1, 0, 2)  # [Hkv, L, D]
            if lse is None:
                out[rows] = _prefill_sdpa(q_s, k_s, v_s, pos, host_pos, scale,
                                          meta.contiguous_suffix[s])
            else:
                out[rows], lse[rows] = _prefill_math(q_s, k_s, v_s, pos, host_pos, scale)
        return out, lse

    def decode(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
               scale: float, num_splits: int | None,
               return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return decode(q, pool, layer, meta, scale, num_splits or 1, return_lse)

    def merge(self, o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
              lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return merge_lse(o_a, lse_a, o_b, lse_b)
