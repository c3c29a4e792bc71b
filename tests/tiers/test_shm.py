"""Attaching the CPU tier's slab from other processes, and who may unlink it."""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

from asymcache.tiers.cpu import CpuTier
from asymcache.tiers.shm import attach
from tests.tiers.conftest import block, finish, run_child

SLOT = 64 * 1024
_SETTLE_S = 1.0  # a resource tracker unlinks within milliseconds of its process's exit


def _segment(name: str) -> str:
    return f"/dev/shm/{name}"


def _stays(path: str, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not os.path.exists(path):
            return False
        time.sleep(0.05)
    return True


def test_a_child_attaches_writes_a_slot_and_exits_and_segment_and_bytes_survive() -> None:
    tier = CpuTier(capacity_bytes=4 * SLOT, slot_bytes=SLOT)
    try:
        key, header, payload = block(5)
        slot = tier.reserve(key, header)
        child = run_child(f"""
            import numpy as np
            from asymcache.tiers.shm import attach
            slab = attach({tier.shm_name!r}, {SLOT}, {tier.num_slots})
            data = np.random.default_rng(5).integers(0, 256, {len(payload)}, dtype=np.uint8)
            view = slab.slot({slot})
            np.frombuffer(view, dtype=np.uint8)[:data.size] = data
            del view
            slab.close()
            print("written")
        """)
        out, err = finish(child)
        assert out.strip() == "written" and "leaked" not in err
        assert _stays(_segment(tier.shm_name), _SETTLE_S)
        assert tier.get([key]) == [None]  # still FILLING: the copy is not confirmed
        tier.confirm(key)
        assert bytes(tier.get([key])[0]) == payload
    finally:
        tier.close()
    assert not os.path.exists(_segment(tier.shm_name))


def test_a_sigkilled_attacher_does_not_take_the_segment_with_it() -> None:
    tier = CpuTier(capacity_bytes=2 * SLOT, slot_bytes=SLOT)
    try:
        child = run_child(f"""
            import sys, time
            from asymcache.tiers.shm import attach
            slab = attach({tier.shm_name!r}, {SLOT}, 2)
            slab.slot(1)[:3] = b"abc"
            print("attached", flush=True)
            time.sleep(60)
        """)
        assert child.stdout.readline().strip() == "attached"
        child.send_signal(signal.SIGKILL)
        child.communicate(timeout=30)
        assert _stays(_segment(tier.shm_name), _SETTLE_S)
        assert bytes(tier.slot_view(1)[:3]) == b"abc"
    finally:
        tier.close()


def test_the_segment_of_a_sigkilled_creator_is_removed_by_its_resource_tracker() -> None:
    child = run_child(f"""
        import time
        from asymcache.tiers.cpu import CpuTier
        tier = CpuTier(capacity_bytes={SLOT}, slot_bytes={SLOT})
        print(tier.shm_name, flush=True)
        time.sleep(60)
    """)
    name = child.stdout.readline().strip()
    assert os.path.exists(_segment(name))
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    deadline = time.monotonic() + 10
    while os.path.exists(_segment(name)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not os.path.exists(_segment(name))


def test_attached_views_and_the_tier_share_the_same_bytes() -> None:
    tier = CpuTier(capacity_bytes=2 * SLOT, slot_bytes=SLOT)
    slab = attach(tier.shm_name, SLOT, tier.num_slots)
    try:
        key, header, payload = block(1)
        tier.put([(key, header, payload)])
        slot = tier.slot_of(key)
        assert bytes(slab.slot(slot)[: len(payload)]) == payload
        arr = np.frombuffer(slab.slot(1 - slot), dtype=np.uint8)
        arr[:4] = [1, 2, 3, 4]
        assert bytes(tier.slot_view(1 - slot)[:4]) == b"\x01\x02\x03\x04"
        del arr
    finally:
        slab.close()
        tier.close()


def test_attach_to_a_missing_segment_is_file_not_found() -> None:
    with pytest.raises(FileNotFoundError):
        attach(f"asymcache-missing-{os.getpid()}", SLOT, 1)


def test_attach_with_a_larger_geometry_than_the_segment_is_refused() -> None:
    tier = CpuTier(capacity_bytes=2 * SLOT, slot_bytes=SLOT)
    try:
        with pytest.raises(ValueError, match="smaller than 3 slots"):
            attach(tier.shm_name, SLOT, 3)
        with attach(tier.shm_name, SLOT, 2) as slab, pytest.raises(IndexError):
            slab.slot(2)
    finally:
        tier.close()
