"""The reference itself, against the definition written out one query and one head at a time.

Key ``j`` of sequence ``s`` is read from ``pool[table[j // B], layer, :, j % B]``; query ``t``
sees keys ``j <= q_positions[t]`` (all below ``kv_lens[s]``). float64, tolerance 1e-12.
"""

from __future__ import annotations

import pytest
import torch

from asymcache.kernels.api import msa_prefill
from tests.kernels.cases import LAYER, Shape, make_case


def _by_definition(case) -> tuple[torch.Tensor, torch.Tensor]:
    q, pool, meta = case.q.cpu().double(), case.pool.cpu().double(), case.meta
    block_size, group = pool.shape[3], q.shape[1] // pool.shape[4]
    out, lse = torch.zeros_like(q), torch.zeros(q.shape[:2], dtype=torch.float64)
    for s in range(meta.num_seqs):
        table = meta.block_tables[s].tolist()
        for t in range(meta.host_cu_seqlens[s], meta.host_cu_seqlens[s + 1]):
            seen = range(int(meta.q_positions[t]) + 1)
            keys = torch.stack([pool[table[j // block_size], LAYER, 0, j % block_size]
                                for j in seen])
            values = torch.stack([pool[table[j // block_size], LAYER, 1, j % block_size]
                                  for j in seen])
            for h in range(q.shape[1]):
                scores = keys[:, h // group] @ q[t, h] * case.scale
                lse[t, h] = torch.logsumexp(scores, 0)
                out[t, h] = torch.softmax(scores, 0) @ values[:, h // group]
    return out, lse


@pytest.mark.parametrize("pattern", ["mixed_lengths", "many_tiny_segments"])
def test_reference_prefill_equals_the_definition(pattern: str) -> None:
    case = make_case(pattern, Shape(64, 16, 4, 2))
    case.q = case.q.double()
    case.pool = case.pool.double()
    o, lse = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                         backend="reference")
    want_o, want_lse = _by_definition(case)
    assert o.dtype == torch.float64 and lse.dtype == torch.float64
    torch.testing.assert_close(o, want_o, rtol=0, atol=1e-12)
    torch.testing.assert_close(lse, want_lse, rtol=0, atol=1e-12)
