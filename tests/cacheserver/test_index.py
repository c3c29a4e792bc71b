"""The block index shares what repeats across records and stays within its bound."""

from __future__ import annotations

import pytest

from asymcache.cacheserver.index import BlockIndex, IndexFull
from asymcache.cacheserver.protocol import BlockRef


def _ref(key: int, parent: int | None, ns: int = 1) -> BlockRef:
    return BlockRef(bytes([key]) * 16, bytes([ns]) * 16,
                    bytes([parent]) * 16 if parent is not None else bytes(16), key)


def test_records_share_namespaces_and_point_at_their_parents_key_object() -> None:
    index = BlockIndex(8)
    a = index.ensure(_ref(1, None), 16, 4096, "L")
    b = index.ensure(_ref(2, 1), 16, 4096, "L")
    c = index.ensure(_ref(3, 9), 16, 4096, "L")  # parent not indexed: its own bytes
    assert a.parent is None and b.parent is a.key and c.parent == bytes([9]) * 16
    assert b.namespace is a.namespace is c.namespace


def test_shared_values_are_bounded_and_the_index_refuses_past_max_blocks() -> None:
    index = BlockIndex(2)
    index.SHARED_MAX = 1
    first = index.ensure(_ref(1, None, ns=1), 16, 4096, "L")
    other = index.ensure(_ref(2, None, ns=2), 16, 4096, "L")
    assert index.shared(bytes([1]) * 16) is first.namespace
    assert other.namespace == bytes([2]) * 16
    x, y = bytes([2]) * 16, bytes([2]) * 16  # past the bound: nothing more is kept
    assert index.shared(x) is x and index.shared(y) is y
    with pytest.raises(IndexFull):
        index.ensure(_ref(3, None), 16, 4096, "L")
