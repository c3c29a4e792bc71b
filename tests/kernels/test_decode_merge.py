"""Decode and merge identities, for every backend.

* decode of one token equals prefill of the same token;
* split-KV decode equals unsplit decode;
* merging the results over two halves of the KV equals attending over the whole;
* ``merge_state`` matches the reference and ignores a side that saw nothing (``lse = -inf``).

float32 throughout; tolerance 2e-6 absolute between two runs of one backend (only the order
of float32 sums differs), ``cases.TOLERANCE`` against the reference. Triton runs interpreted.
"""

from __future__ import annotations

import pytest
import torch

from asymcache.kernels.api import merge_state, msa_decode, msa_prefill
from asymcache.kernels.metadata import AttentionMetadata
from tests.kernels.cases import DEVICE, LAYER, Shape, assert_matches, decode_case, reference

BACKENDS = ["reference", "torch", "triton"]
SAME = 2e-6
SHAPE = Shape(64, 16, 8, 2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_equals_prefill_of_the_same_single_token(backend: str) -> None:
    case = decode_case([1, 17, 50], SHAPE)
    o_d, lse_d = msa_decode(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                            backend=backend)
    o_p, lse_p = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                             backend=backend)
    torch.testing.assert_close(o_d, o_p, rtol=0, atol=SAME)
    torch.testing.assert_close(lse_d, lse_p, rtol=0, atol=SAME)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("num_splits", [2, 5])
def test_split_kv_decode_equals_unsplit(backend: str, num_splits: int) -> None:
    case = decode_case([3, 100, 161], SHAPE)
    whole = msa_decode(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                       num_splits=1, backend=backend)
    split = msa_decode(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                       num_splits=num_splits, backend=backend)
    torch.testing.assert_close(split[0], whole[0], rtol=0, atol=SAME)
    torch.testing.assert_close(split[1], whole[1], rtol=0, atol=SAME)


def _half_meta(meta: AttentionMetadata, first_block: int, kv_len: int) -> AttentionMetadata:
    """Decode metadata over blocks ``[first_block, ...)`` of sequence 0, ``kv_len`` tokens."""
    table = meta.block_tables[:1, first_block:].contiguous()
    return AttentionMetadata(
        cu_seqlens_q=torch.tensor([0, 1], dtype=torch.int32, device=DEVICE),
        q_positions=torch.tensor([kv_len - 1], dtype=torch.int32, device=DEVICE),
        kv_lens=torch.tensor([kv_len], dtype=torch.int32, device=DEVICE),
        block_tables=table,
        slot_mapping=torch.tensor([-1], dtype=torch.int64, device=DEVICE),
    )


@pytest.mark.parametrize("backend", BACKENDS)
def test_merging_two_halves_equals_attending_over_the_whole(backend: str) -> None:
    case = decode_case([90], SHAPE)
    cut = 3 * SHAPE.block_size  # halves [0, 48) and [48, 90)
    first = msa_decode(case.q, case.pool, LAYER, _half_meta(case.meta, 0, cut), case.scale,
                       return_lse=True, backend=backend)
    second = msa_decode(case.q, case.pool, LAYER, _half_meta(case.meta, 3, 90 - cut),
                        case.scale, return_lse=True, backend=backend)
    o, lse = merge_state(*first, *second, backend=backend)
    assert_matches(o, lse, reference(case, decode=True), torch.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_state_matches_reference_and_ignores_sides_that_saw_nothing(backend: str) -> None:
    gen = torch.Generator().manual_seed(3)
    o_a, o_b = (torch.randn((5, 6, 80), generator=gen) for _ in range(2))
    lse_a, lse_b = (torch.randn((5, 6), generator=gen) * 4 for _ in range(2))
    lse_a[0, :3] = float("-inf")
    o_a[0, :3] = float("nan")  # garbage behind -inf must not leak
    lse_a[1], lse_b[1] = float("-inf"), float("-inf")
    args = [x.to(DEVICE) for x in (o_a, lse_a, o_b, lse_b)]
    o, lse = merge_state(*args, backend=backend)
    ref_o, ref_lse = merge_state(o_a.double(), lse_a, o_b.double(), lse_b, backend="reference")
    torch.testing.assert_close(o.cpu().double(), ref_o, rtol=0, atol=1e-6)
    torch.testing.assert_close(lse.cpu().double(), ref_lse.double(), rtol=0, atol=1e-6)
    torch.testing.assert_close(o[0, :3].cpu(), o_b[0, :3], rtol=0, atol=1e-6)  # only side b
    assert torch.equal(o[1].cpu(), torch.zeros(6, 80))
    assert torch.isneginf(lse[1]).all()
