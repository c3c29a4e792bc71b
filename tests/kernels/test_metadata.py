"""``AttentionMetadata``: host-side derived values and the errors of its validating constructor."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from asymcache.kernels.metadata import AttentionMetadata


def _meta(**override) -> AttentionMetadata:
    fields = {
        "cu_seqlens_q": torch.tensor([0, 3, 4], dtype=torch.int32),
        "q_positions": torch.tensor([0, 5, 6, 9], dtype=torch.int32),
        "kv_lens": torch.tensor([7, 10], dtype=torch.int32),
        "block_tables": torch.tensor([[3, 1, -1], [0, 2, 4]], dtype=torch.int32),
        "slot_mapping": torch.tensor([12, 5, 6, 17], dtype=torch.int64),
    }
    fields.update(override)
    return AttentionMetadata(**fields)


def test_derived_host_values_are_computed_at_construction() -> None:
    meta = _meta()
    assert (meta.num_seqs, meta.num_tokens, meta.max_q_len, meta.max_kv_len) == (2, 4, 3, 10)
    assert meta.host_cu_seqlens == (0, 3, 4) and meta.host_kv_lens == (7, 10)
    assert meta.contiguous_suffix == (False, True)
    assert meta.min_block_size == 4  # sequence 0: 7 tokens in 2 blocks
    assert meta.max_block_id == 4
    assert not meta.is_decode


def test_decode_shaped_metadata_is_recognised() -> None:
    meta = AttentionMetadata.for_sequences([[6], [0]], [7, 1], [[2, 0], [1]], block_size=4)
    assert meta.is_decode and meta.contiguous_suffix == (True, True)
    assert meta.slot_mapping.tolist() == [2, 4]  # position 6: table[1] = block 0, offset 2
    assert meta.block_tables.tolist() == [[2, 0], [1, -1]]


def test_metadata_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        _meta().kv_lens = torch.tensor([1, 1], dtype=torch.int32)


@pytest.mark.parametrize(("override", "message"), [
    ({"cu_seqlens_q": torch.tensor([0, 3, 4])}, "cu_seqlens_q must be torch.int32"),
    ({"slot_mapping": torch.tensor([12, 5, 6, 17], dtype=torch.int32)},
     "slot_mapping must be torch.int64"),
    ({"q_positions": [0, 5, 6, 9]}, "q_positions must be a torch.Tensor"),
    ({"cu_seqlens_q": torch.tensor([1, 3, 4], dtype=torch.int32)}, "starting at 0"),
    ({"cu_seqlens_q": torch.tensor([0, 3, 3], dtype=torch.int32)}, "ends at 3"),
    ({"cu_seqlens_q": torch.tensor([0, 5, 4], dtype=torch.int32)}, "non-decreasing"),
    ({"q_positions": torch.tensor([0, 6, 5, 9], dtype=torch.int32)}, "strictly ascending"),
    ({"q_positions": torch.tensor([0, 5, 7, 9], dtype=torch.int32)},
     r"q_positions\[2\] = 7 is not below kv_lens"),
    ({"q_positions": torch.tensor([-1, 5, 6, 9], dtype=torch.int32)}, ">= 0"),
    ({"kv_lens": torch.tensor([7], dtype=torch.int32)}, "must have S=2 rows"),
    ({"slot_mapping": torch.tensor([12, 5, 12, 17])}, "repeats a slot"),
    ({"block_tables": torch.tensor([[-1, 1, -1], [0, 2, 4]], dtype=torch.int32)},
     "row 0 has no block"),
    ({"block_tables": torch.tensor([[3, -2, -1], [0, 2, 4]], dtype=torch.int32)}, ">= 0 or -1"),
])
def test_invalid_fields_raise_value_error_naming_them(override: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        _meta(**override)


def test_negative_slots_may_repeat_and_an_empty_batch_is_valid() -> None:
    meta = _meta(slot_mapping=torch.tensor([-1, 5, -1, 17]))
    assert meta.num_tokens == 4
    empty = AttentionMetadata.for_sequences([], [], [], block_size=16)
    assert (empty.num_seqs, empty.num_tokens, empty.max_q_len) == (0, 0, 0)
