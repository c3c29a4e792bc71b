"""``write_kv`` for every backend: exact bytes where the slots say, nothing anywhere else.

Also the engine's order of work: write a whole prompt's K/V through ``write_kv``, then
``msa_prefill`` over it equals causal attention over the contiguous K/V (float32, 2e-5).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asymcache.kernels.api import msa_prefill, write_kv
from asymcache.kernels.metadata import AttentionMetadata
from tests.kernels.cases import DEVICE

BACKENDS = ["reference", "torch", "triton"]
SENTINEL = -7.25


def _pool(num_blocks: int = 6, block_size: int = 16, heads: int = 2, dim: int = 80):
    return torch.full((num_blocks, 3, 2, block_size, heads, dim), SENTINEL, device=DEVICE)


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_kv_writes_exact_values_only_to_the_given_slots(backend: str) -> None:
    pool = _pool()
    gen = torch.Generator().manual_seed(1)
    k, v = (torch.randn((5, 2, 80), generator=gen).to(DEVICE) for _ in range(2))
    slots = torch.tensor([0, 17, -1, 95, 40], dtype=torch.int64, device=DEVICE)
    write_kv(pool, 2, k, v, slots, backend=backend)
    expected = _pool()
    for t, slot in enumerate(slots.tolist()):
        if slot >= 0:
            expected[slot // 16, 2, 0, slot % 16] = k[t]
            expected[slot // 16, 2, 1, slot % 16] = v[t]
    assert torch.equal(pool, expected)


@pytest.mark.parametrize("backend", BACKENDS)
def test_write_kv_with_only_negative_slots_leaves_the_pool_unchanged(backend: str) -> None:
    pool = _pool()
    k = torch.ones((3, 2, 80), device=DEVICE)
    write_kv(pool, 0, k, k, torch.full((3,), -1, dtype=torch.int64, device=DEVICE),
             backend=backend)
    assert torch.equal(pool, _pool())


@pytest.mark.skipif(DEVICE.type != "cpu", reason="the CPU check; CUDA drops the write instead")
def test_write_kv_rejects_a_slot_past_the_pool() -> None:
    pool = _pool(num_blocks=2)
    k = torch.ones((1, 2, 80))
    with pytest.raises(ValueError, match="slot 32 is past the pool"):
        write_kv(pool, 0, k, k, torch.tensor([32]))


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_prefill_after_write_kv_equals_causal_attention_on_contiguous_kv(backend: str) -> None:
    length, block_size, heads, kv_heads, dim = 45, 16, 4, 2, 64
    gen = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn((length, h, dim), generator=gen).to(DEVICE)
               for h in (heads, kv_heads, kv_heads))
    pool = torch.full((5, 1, 2, block_size, kv_heads, dim), float("nan"), device=DEVICE)
    meta = AttentionMetadata.for_sequences([list(range(length))], [length], [[4, 0, 2]],
                                           block_size, device=DEVICE)
    write_kv(pool, 0, k, v, meta.slot_mapping, backend=backend)
    o = msa_prefill(q, pool, 0, meta, 1 / math.sqrt(dim), backend=backend)
    expected = F.scaled_dot_product_attention(
        q.transpose(0, 1), k.transpose(0, 1).repeat_interleave(2, 0),
        v.transpose(0, 1).repeat_interleave(2, 0), is_causal=True).transpose(0, 1)
    torch.testing.assert_close(o, expected, rtol=0, atol=2e-5)
