"""The engine's slot allocator: free list, references, commits, tail-first local LRU, pins."""

from __future__ import annotations

import pytest

from asymcache.engine.block_manager import BlockManager


def _key(i: int) -> bytes:
    return i.to_bytes(16, "little")


def test_empty_slots_come_first_then_idle_cached_slots_oldest_first() -> None:
    bm = BlockManager(4)
    a = bm.take_empty(3)
    for i, slot in enumerate(a):
        assert bm.commit(slot, _key(i))
    bm.release(list(reversed(a)))  # tail first: slot of key 2 is the oldest idle
    assert bm.take_empty(5) == [3]
    assert bm.can_allocate(3, now=0.0) and not bm.can_allocate(4, now=0.0)
    assert bm.evict_lru(2, now=0.0) == [(a[2], _key(2)), (a[1], _key(1))]
    assert bm.lookup(_key(2)) is None and bm.lookup(_key(0)) == a[0]


def test_a_hit_takes_the_slot_out_of_eviction() -> None:
    bm = BlockManager(2)
    (slot,) = bm.take_empty(1)
    bm.commit(slot, _key(9))
    bm.release([slot])
    bm.acquire(bm.lookup(_key(9)))
    assert bm.evict_lru(1, now=0.0) == []
    assert bm.evict(slot) is None
    bm.release([slot])
    assert bm.evict(slot) == _key(9)
    assert bm.num_used == 1 and bm.num_empty == 1


def test_uncommitted_slots_return_to_the_free_list() -> None:
    bm = BlockManager(2)
    slots = bm.take_empty(2)
    bm.release(slots)
    assert bm.num_empty == 2 and bm.num_idle == 0


def test_commit_of_a_key_held_elsewhere_keeps_the_slot_private() -> None:
    bm = BlockManager(3)
    a, b = bm.take_empty(2)
    assert bm.commit(a, _key(1))
    assert not bm.commit(b, _key(1))
    bm.release([a, b])
    assert bm.num_idle == 1 and bm.num_empty == 2
    assert bm.held() == [(_key(1), a)]


def test_pinned_slots_are_not_evicted_until_the_ttl_passes() -> None:
    bm = BlockManager(1)
    (slot,) = bm.take_empty(1)
    bm.commit(slot, _key(5))
    bm.release([slot])
    bm.pin([slot], until=10.0)
    assert not bm.can_allocate(1, now=5.0)
    assert bm.evict_lru(1, now=5.0) == []
    assert bm.evict_lru(1, now=10.0) == [(slot, _key(5))]


def test_misuse_raises() -> None:
    bm = BlockManager(1)
    with pytest.raises(ValueError, match="released more often"):
        bm.release([0])
    with pytest.raises(ValueError, match="empty"):
        bm.acquire(0)
    with pytest.raises(ValueError, match="num_slots"):
        BlockManager(0)
