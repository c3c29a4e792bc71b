"""The torch reference of every MSA op, written for clarity: the oracle of every kernel test.

Everything is computed in float64 from a dense per-sequence KV and an explicit mask
``j <= q_position`` (and ``j < kv_len`` by slicing), then cast back: ``o`` to ``q``'s dtype,
the LSE to float32 (float64 when ``q`` is float64). Loops are over sequences and blocks,
never over heads; speed is not a goal here.
"""

from __future__ import annotations

import torch

from asymcache.kernels.backends import Backend
from asymcache.kernels.metadata import AttentionMetadata


def gather_sequence_kv(pool: torch.Tensor, layer: int, table_row: torch.Tensor,
                       kv_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """K and V ``[kv_len, Hkv, D]`` of one sequence, its blocks taken in logical order."""
    block_size = pool.shape[3]
    num_blocks = -(-kv_len // block_size)
    blocks = [pool[int(table_row[i]), layer] for i in range(num_blocks)]  # each [2, B, Hkv, D]
    if not blocks:
        empty = pool.new_empty((0, *pool.shape[4:]))
        return empty, empty
    kv = torch.cat(blocks, dim=1)[:, :kv_len]
    return kv[0], kv[1]


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor,
                    scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked attention in float64.

    ``q [n, Hq, D]``, ``k``/``v`` ``[L, Hkv, D]``, ``q_pos`` ``[n]``: query ``i`` sees key
    ``j`` iff ``j <= q_pos[i]``. Returns ``o [n, Hq, D]`` and the natural-log LSE ``[n, Hq]``,
    both float64.
    """
    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, dim=1)
    v = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("nhd,lhd->hnl", q.double(), k) * scale
    visible = torch.arange(k.shape[0], device=q.device)[None, :] <= q_pos[:, None].long()
    scores = scores.masked_fill(~visible[None], float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [Hq, n]
    probs = torch.exp(scores - lse[..., None])
    out = torch.einsum("hnl,lhd->nhd", probs, v)
    return out, lse.transpose(0, 1)


def _lse_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


class ReferenceBackend(Backend):
    """Dense-mask float64 reference of ``write_kv``, prefill, decode and ``merge_state``."""

    name = "reference"

    def write_kv(self, pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        block_size = pool.shape[3]
        for t, slot in enumerate(slot_mapping.tolist()):
            if slot < 0:
                continue
            pool[slot // block_size, layer, 0, slot % block_size] = k[t]
            pool[slot // block_size, layer, 1, slot % block_size] = v[t]

    def prefill(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                scale: float, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        out = torch.zeros_like(q)
        lse = torch.zeros(q.shape[:2], dtype=_lse_dtype(q), device=q.device)
        cu = meta.host_cu_seqlens
        for s in range(meta.num_seqs):
            if cu[s] == cu[s + 1]:
                continue
            k, v = gather_sequence_kv(pool, layer, meta.block_tables[s], meta.host_kv_lens[s])
            o_s, lse_s = dense_attention(q[cu[s]:cu[s + 1]], k, v,
                                         meta.q_positions[cu[s]:cu[s + 1]], scale)
            out[cu[s]:cu[s + 1]] = o_s.to(q.dtype)
            lse[cu[s]:cu[s + 1]] = lse_s.to(lse.dtype)
        return out, (lse if return_lse else None)

    def decode(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
               scale: float, num_splits: int | None,
               return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        # One query per sequence at kv_len - 1: exactly a prefill; splitting is exact in theory.
        return self.prefill(q, pool, layer, meta, scale, return_lse)

    def merge(self, o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
              lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, b = lse_a.double(), lse_b.double()
        lse = torch.logaddexp(a, b)
        seen = torch.isfinite(lse)
        w_a = torch.where(seen, torch.exp(a - lse), 0.0)[..., None]
        w_b = torch.where(seen, torch.exp(b - lse), 0.0)[..., None]
        o = torch.where(w_a > 0, w_a * o_a.double(), 0.0) + torch.where(
            w_b > 0, w_b * o_b.double(), 0.0)
        return o.to(o_a.dtype), lse.to(_lse_dtype(lse_a))
