"""The block-major pool: shapes, zero-copy host views, copies in and out, block bytes."""

from __future__ import annotations

import pytest
import torch

from asymcache.cacheserver.blocks import KVLayout
from asymcache.engine.kv_pool import KVPool

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=4, block_size=4, dtype="float32")


def test_pool_is_block_major_and_zeroed() -> None:
    pool = KVPool(LAYOUT, 3, "cpu")
    assert tuple(pool.tensor.shape) == (3, 2, 2, 4, 2, 4)
    assert pool.block(1).is_contiguous() and not pool.tensor.any()
    assert pool.bytes_per_block == 2 * 2 * 4 * 2 * 4 * 4


def test_load_and_store_move_exact_bytes_through_shared_buffers() -> None:
    pool = KVPool(LAYOUT, 3, "cpu")
    src = bytearray(torch.arange(128, dtype=torch.float32).view(torch.uint8).numpy().tobytes())
    view = pool.host_view(memoryview(src))
    pool.load([2], [view])
    assert torch.equal(pool.block(2), view) and not pool.block(0).any()
    dst = bytearray(pool.bytes_per_block)
    pool.store([2], [pool.host_view(memoryview(dst))])
    assert dst == src
    assert pool.read(2) == bytes(src)


def test_host_view_shares_memory_and_checks_its_length() -> None:
    pool = KVPool(LAYOUT, 1, "cpu")
    buf = bytearray(pool.bytes_per_block)
    view = pool.host_view(memoryview(buf))
    view[0, 0, 0, 0, 0] = 1.5
    assert torch.frombuffer(buf, dtype=torch.float32)[0] == 1.5
    with pytest.raises(ValueError, match="bytes"):
        pool.host_view(memoryview(bytearray(10)))


def test_bad_sizes_and_dtypes_are_refused() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        KVPool(LAYOUT, 0, "cpu")
    with pytest.raises(ValueError, match="dtype"):
        KVPool(KVLayout(1, 1, 4, 4, "float8_e4m3fn"), 1, "cpu")
