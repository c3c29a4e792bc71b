"""The LMDB disk tier: round trips, capacity, durability across restarts and SIGKILL, rebuild."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import replace

import pytest

from asymcache.tiers.base import create_tier
from asymcache.tiers.disk import DiskTier
from tests.tiers.conftest import block, finish, run_child

BLOCK = 64 * 1024


@pytest.fixture
def disk(db_path: str) -> Iterator[DiskTier]:
    tier = DiskTier(db_path, capacity_bytes=4 << 20)
    yield tier
    tier.close()


def test_registry_builds_a_disk_tier_by_name(db_path: str) -> None:
    tier = create_tier("disk", path=db_path, capacity_bytes=1 << 20, block_bytes=BLOCK)
    try:
        assert isinstance(tier, DiskTier) and tier.name == "disk"
        assert tier.capacity_blocks == (1 << 20) // tier.entry_bytes(block(0)[1])
    finally:
        tier.close()


def test_queued_and_committed_blocks_read_back_identical(disk: DiskTier) -> None:
    items = [block(i, BLOCK + i) for i in range(8)]
    assert disk.put(items) == [True] * 8
    keys = [key for key, _, _ in items]
    assert [bytes(b) for b in disk.get(keys)] == [p for _, _, p in items]  # maybe still queued
    disk.flush()
    assert disk.pending_ops == 0
    got = disk.get(keys)
    assert all(isinstance(b, bytes) for b in got)
    assert got == [p for _, _, p in items]
    assert disk.contains([*keys, b"\xff" * 16]) == [True] * 8 + [False]
    assert len(disk) == 8 and disk.error_counts() == {}


def test_put_copies_the_payload_so_the_caller_may_reuse_its_buffer(disk: DiskTier) -> None:
    key, header, payload = block(1)
    buf = bytearray(payload)
    disk.put([(key, header, buf)])
    buf[:] = bytes(len(buf))
    disk.flush()
    assert disk.get([key]) == [payload]


def test_a_header_without_checksum_gets_one_and_a_wrong_one_is_refused(disk: DiskTier) -> None:
    (k1, h1, p1), (k2, h2, p2) = block(1), block(2)
    assert disk.put([(k1, replace(h1, checksum=0), p1)], durable=True) == [True]
    assert dict(disk.headers())[k1] == h1
    assert disk.put([(k2, replace(h2, checksum=h2.checksum ^ 1), p2)]) == [False]
    assert disk.contains([k2]) == [False] and disk.error_counts() == {"put_checksum": 1}


def test_capacity_is_never_exceeded_and_deletes_make_room(db_path: str) -> None:
    probe = DiskTier(db_path + "-probe", capacity_bytes=1 << 20)
    entry = probe.entry_bytes(block(0, BLOCK)[1])
    probe.close()
    tier = DiskTier(db_path, capacity_bytes=5 * entry)
    try:
        items = [block(i, BLOCK) for i in range(8)]
        assert tier.put(items) == [True] * 5 + [False] * 3
        assert tier.used_bytes == 5 * entry == tier.capacity_bytes
        assert tier.delete([items[0][0], items[1][0], b"\xee" * 16]) == 2
        assert tier.used_bytes == 3 * entry
        assert tier.put(items[5:], durable=True) == [True, True, False]
        assert tier.used_bytes <= tier.capacity_bytes and len(tier) == 5
        assert tier.get([items[0][0]]) == [None] and tier.get([items[6][0]]) == [items[6][2]]
    finally:
        tier.close()


def test_put_of_a_held_key_is_a_no_op_and_delete_then_put_stores_again(disk: DiskTier) -> None:
    key, header, payload = block(3)
    assert disk.put([(key, header, payload)]) == [True]
    used = disk.used_bytes
    assert disk.put([(key, header, payload)], durable=True) == [True]
    assert disk.used_bytes == used
    assert disk.delete([key]) == 1 and disk.get([key]) == [None]
    assert disk.put([(key, header, payload)], durable=True) == [True]
    assert disk.get([key]) == [payload] and disk.used_bytes == used


def test_read_into_copies_the_verified_payload_into_a_destination(disk: DiskTier) -> None:
    key, header, payload = block(4)
    disk.put([(key, header, payload)], durable=True)
    dest = bytearray(BLOCK + 100)
    assert disk.read_into(key, dest) == header
    assert bytes(dest[:BLOCK]) == payload
    assert disk.read_into(b"\xee" * 16, dest) is None
    with pytest.raises(ValueError, match="destination holds 10"):
        disk.read_into(key, bytearray(10))


def test_blocks_and_headers_survive_close_and_reopen(db_path: str) -> None:
    items = [block(i, BLOCK // 2 + 7 * i) for i in range(20)]
    tier = DiskTier(db_path, capacity_bytes=4 << 20)
    tier.put(items)  # not durable: close() must flush the queue
    tier.delete([items[3][0]])
    used = tier.used_bytes
    tier.close()
    tier = DiskTier(db_path, capacity_bytes=4 << 20)
    try:
        expected = {key: header for key, header, _ in items if key != items[3][0]}
        assert dict(tier.headers()) == expected
        assert len(tier) == 19 and tier.used_bytes == used
        assert tier.get([key for key, _, _ in items]) == [
            None if i == 3 else p for i, (_, _, p) in enumerate(items)]
    finally:
        tier.close()


def test_headers_include_queued_blocks_once(disk: DiskTier) -> None:
    committed = [block(i) for i in range(3)]
    disk.put(committed, durable=True)
    queued = [block(i) for i in range(3, 6)]
    disk.put(queued)
    listed = list(disk.headers())
    assert sorted(k for k, _ in listed) == sorted(k for k, _, _ in committed + queued)


def test_a_durable_put_survives_sigkill_of_the_writing_process(db_path: str) -> None:
    child = run_child(f"""
        import time
        from tests.tiers.conftest import block
        from asymcache.tiers.disk import DiskTier
        tier = DiskTier({db_path!r}, capacity_bytes=4 << 20)
        assert tier.put([block(i, {BLOCK}) for i in range(6)], durable=True) == [True] * 6
        print("durable", flush=True)
        time.sleep(60)
    """)
    assert child.stdout.readline().strip() == "durable"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL
    tier = DiskTier(db_path, capacity_bytes=4 << 20)  # the dead child's lock is gone
    try:
        items = [block(i, BLOCK) for i in range(6)]
        assert tier.get([key for key, _, _ in items]) == [p for _, _, p in items]
        assert dict(tier.headers()) == {key: header for key, header, _ in items}
    finally:
        tier.close()


def test_a_second_process_cannot_open_the_same_directory(disk: DiskTier, db_path: str) -> None:
    with pytest.raises(RuntimeError, match="already open"):
        DiskTier(db_path, capacity_bytes=1 << 20)
    out, _ = finish(run_child(f"""
        from asymcache.tiers.disk import DiskTier
        try:
            DiskTier({db_path!r}, capacity_bytes=1 << 20)
        except RuntimeError as exc:
            print(exc)
    """))
    assert "already open in another process" in out


def test_a_closed_tier_refuses_use_with_a_clear_error(db_path: str) -> None:
    tier = DiskTier(db_path, capacity_bytes=1 << 20)
    tier.close()
    tier.close()
    with pytest.raises(RuntimeError, match="is closed"):
        tier.put([block(1)])


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"capacity_bytes": 0}, "capacity_bytes"), ({"capacity_bytes": 1, "map_bytes": -1},
                                                  "map_bytes"),
     ({"capacity_bytes": 1, "block_bytes": -1}, "block_bytes"),
     ({"capacity_bytes": 1, "queue_bytes": 1.5}, "queue_bytes")],
)
def test_bad_configuration_names_the_field(db_path: str, kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        DiskTier(db_path, **kwargs)


def test_recycled_staging_buffers_never_leak_into_stored_blocks(db_path: str) -> None:
    tier = DiskTier(db_path, capacity_bytes=4 << 20, queue_bytes=1 << 20, batch_bytes=256 << 10)
    try:
        rounds = [[block(10 * r + i, BLOCK) for i in range(6)] for r in range(4)]
        for items in rounds:  # each round reuses the buffers the previous one released
            assert tier.put(items) == [True] * 6  # a plain put never waits: flush in between
            tier.flush()
        for items in rounds:
            assert tier.get([key for key, _, _ in items]) == [p for _, _, p in items]
    finally:
        tier.close()
