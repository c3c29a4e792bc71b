"""The CPU shared-memory tier: key API, slot states, capacity, and the segment's lifetime."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import pytest

from asymcache.tiers.base import create_tier
from asymcache.tiers.cpu import CpuTier
from tests.tiers.conftest import block

SLOT = 64 * 1024


@pytest.fixture
def cpu() -> Iterator[CpuTier]:
    tier = CpuTier(capacity_bytes=4 * SLOT + 100, slot_bytes=SLOT)
    yield tier
    tier.close()


def test_registry_builds_a_cpu_tier_by_name() -> None:
    tier = create_tier("cpu", capacity_bytes=2 * SLOT, slot_bytes=SLOT)
    try:
        assert isinstance(tier, CpuTier) and tier.name == "cpu"
        assert (tier.num_slots, tier.capacity_blocks, tier.capacity_bytes) == (2, 2, 2 * SLOT)
    finally:
        tier.close()


def test_put_then_get_returns_a_private_copy_of_the_same_bytes(cpu: CpuTier) -> None:
    items = [block(i, SLOT - i) for i in range(3)]
    assert cpu.put(items) == [True, True, True]
    views = cpu.get([key for key, _, _ in items])
    for view, (key, _, payload) in zip(views, items, strict=True):
        assert isinstance(view, bytes) and view == payload
        slot = cpu.slot_of(key)
        assert bytes(cpu.slot_view(slot)[: len(payload)]) == payload
    assert len(cpu) == 3 and cpu.contains([items[0][0], b"\xff" * 16]) == [True, False]
    assert dict(cpu.headers()) == {key: header for key, header, _ in items}


def test_put_of_a_held_key_is_a_no_op(cpu: CpuTier) -> None:
    key, header, payload = block(1)
    assert cpu.put([(key, header, payload)]) == [True]
    assert cpu.put([(key, header, payload)]) == [True]
    assert len(cpu) == 1 and cpu.free_slots == 3


def test_capacity_is_never_exceeded_and_delete_frees_slots(cpu: CpuTier) -> None:
    items = [block(i) for i in range(6)]
    assert cpu.put(items) == [True] * 4 + [False] * 2
    assert cpu.used_bytes == cpu.capacity_bytes == 4 * SLOT and cpu.free_slots == 0
    assert cpu.get([items[4][0]]) == [None]
    assert cpu.delete([items[0][0], items[1][0], items[5][0]]) == 2
    assert cpu.put(items[4:]) == [True, True]
    assert cpu.used_bytes == 4 * SLOT and len(cpu) == 4


def test_a_block_larger_than_a_slot_is_refused(cpu: CpuTier) -> None:
    assert cpu.put([block(1, SLOT + 1)]) == [False]
    key, header, _ = block(2, SLOT + 1)
    assert cpu.reserve(key, header) is None
    assert cpu.free_slots == 4


def test_a_payload_that_disagrees_with_its_header_is_a_value_error(cpu: CpuTier) -> None:
    key, header, payload = block(1)
    with pytest.raises(ValueError, match=r"header\.length"):
        cpu.put([(key, header, payload[:-1])])
    with pytest.raises(ValueError, match="16 bytes"):
        cpu.put([(b"short", header, payload)])


def test_a_filling_slot_is_never_readable_until_confirmed(cpu: CpuTier) -> None:
    key, header, payload = block(7)
    slot = cpu.reserve(key, header)
    assert slot == 0 and cpu.free_slots == 3 and cpu.used_bytes == SLOT
    cpu.slot_view(slot)[: len(payload)] = payload
    assert cpu.get([key]) == [None]
    assert cpu.contains([key]) == [False]
    assert cpu.slot_of(key) is None and list(cpu.headers()) == [] and len(cpu) == 0
    assert cpu.put([(key, header, payload)]) == [False]  # someone else is filling it
    assert cpu.delete([key]) == 0
    assert cpu.reserve(key, header) is None
    assert cpu.confirm(key) == slot
    assert bytes(cpu.get([key])[0]) == payload and cpu.slot_of(key) == slot


def test_abort_frees_a_filling_slot_and_leaves_ready_blocks_alone(cpu: CpuTier) -> None:
    (k1, h1, _), (k2, h2, p2) = block(1), block(2)
    assert cpu.reserve(k1, h1) is not None
    assert cpu.abort(k1) is True and cpu.free_slots == 4
    assert cpu.abort(k1) is False
    assert cpu.put([(k2, h2, p2)]) == [True]
    assert cpu.abort(k2) is False and cpu.contains([k2]) == [True]
    with pytest.raises(KeyError, match="no FILLING slot"):
        cpu.confirm(k2)
    with pytest.raises(KeyError, match="absent"):
        cpu.confirm(k1)


def test_confirm_may_replace_the_header_with_its_checksum(cpu: CpuTier) -> None:
    key, header, payload = block(3)
    slot = cpu.reserve(key, replace(header, checksum=0))
    cpu.slot_view(slot)[: len(payload)] = payload
    cpu.confirm(key, header)
    assert dict(cpu.headers()) == {key: header}


def test_a_ready_block_whose_slot_bytes_change_is_a_counted_miss_reported_once(
        cpu: CpuTier) -> None:
    (k1, h1, p1), (k2, h2, p2) = block(1), block(2)
    assert cpu.put([(k1, h1, p1), (k2, h2, p2)]) == [True, True]
    assert cpu.checksums([k1, k2, b"\xff" * 16]) == [h1.checksum, h2.checksum, 0]
    cpu.slot_view(cpu.slot_of(k1))[5:6] = bytes([p1[5] ^ 1])  # a hostile engine's write
    assert cpu.get([k1, k2]) == [None, p2]
    assert cpu.error_counts() == {"checksum": 1}
    assert cpu.take_failed() == [k1] and cpu.take_failed() == []


def test_confirm_without_a_checksum_computes_it_from_the_slot(cpu: CpuTier) -> None:
    key, header, payload = block(4)
    slot = cpu.reserve(key, replace(header, checksum=0))
    cpu.slot_view(slot)[: len(payload)] = payload
    cpu.confirm(key)
    assert cpu.checksums([key]) == [header.checksum] and cpu.get([key]) == [payload]


def test_a_confirmed_checksum_that_the_bytes_do_not_match_is_never_read(cpu: CpuTier) -> None:
    key, header, payload = block(5)
    slot = cpu.reserve(key, header)
    cpu.slot_view(slot)[: len(payload)] = bytes(len(payload))  # not what was committed
    cpu.confirm(key, header)
    assert cpu.get([key]) == [None] and cpu.error_counts() == {"checksum": 1}


def test_slots_are_block_major_at_fixed_offsets(cpu: CpuTier) -> None:
    items = [block(i) for i in range(2)]
    cpu.put(items)
    whole = np.frombuffer(cpu.slot_view(0).obj, dtype=np.uint8)
    for key, _, payload in items:
        start = cpu.slot_of(key) * SLOT
        assert whole[start:start + len(payload)].tobytes() == payload
    del whole


def test_a_populated_slab_starts_zeroed_and_works() -> None:
    tier = CpuTier(capacity_bytes=3 * SLOT, slot_bytes=SLOT, populate=True)
    try:
        assert bytes(tier.slot_view(2)) == bytes(SLOT)
        key, header, payload = block(9)
        assert tier.put([(key, header, payload)]) == [True]
        assert bytes(tier.get([key])[0]) == payload
    finally:
        tier.close()


def test_close_unlinks_the_segment() -> None:
    tier = CpuTier(capacity_bytes=SLOT, slot_bytes=SLOT, shm_name=f"asymcache-test-{os.getpid()}")
    path = f"/dev/shm/{tier.shm_name}"
    assert os.path.exists(path) and os.path.getsize(path) == SLOT
    tier.close()
    assert not os.path.exists(path)


def test_a_taken_segment_name_fails_with_advice(cpu: CpuTier) -> None:
    with pytest.raises(FileExistsError, match="already exists"):
        CpuTier(capacity_bytes=SLOT, slot_bytes=SLOT, shm_name=cpu.shm_name)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"capacity_bytes": 0, "slot_bytes": 1}, "capacity_bytes"),
     ({"capacity_bytes": 10, "slot_bytes": 11}, "capacity_bytes"),
     ({"capacity_bytes": 10, "slot_bytes": True}, "slot_bytes"),
     ({"capacity_bytes": 10, "slot_bytes": 1, "shm_name": ""}, "shm_name")],
)
def test_bad_configuration_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        CpuTier(**kwargs)
