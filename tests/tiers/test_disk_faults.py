"""The disk tier under faults: corrupt and truncated values, a full map, a failing file system.

Each is a miss and a counted error, never wrong bytes and never a crash; lost blocks are
reported once through ``take_failed`` so the daemon can forget them.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable

import lmdb

from asymcache.tiers.base import checksum
from asymcache.tiers.disk import DiskTier
from tests.tiers.conftest import block, finish, run_child

BLOCK = 64 * 1024
CAP = 4 << 20


def _stored(db_path: str, n: int, nbytes: int = BLOCK) -> list[tuple]:
    items = [block(i, nbytes) for i in range(n)]
    tier = DiskTier(db_path, capacity_bytes=CAP)
    assert tier.put(items, durable=True) == [True] * n
    tier.close()
    return items


def _rewrite(db_path: str, key: bytes, change: Callable[[bytes], bytes],
             db_name: bytes = b"data") -> None:
    """Replace the stored value of ``key`` by ``change(value)``, behind the tier's back."""
    env = lmdb.open(db_path, max_dbs=3, map_size=1 << 30)
    data = env.open_db(db_name)
    with env.begin(write=True) as txn:
        txn.put(key, change(bytes(txn.get(key, db=data))), db=data)
    env.close()


def _assert_dropped(tier: DiskTier, items: list[tuple], bad: int, kind: str) -> None:
    keys = [key for key, _, _ in items]
    got = tier.get(keys)
    assert got == [None if i == bad else p for i, (_, _, p) in enumerate(items)]
    assert tier.error_counts() == {kind: 1}
    assert tier.take_failed() == [keys[bad]] and tier.take_failed() == []
    assert tier.contains([keys[bad]]) == [False] and len(tier) == len(items) - 1
    assert tier.get([keys[bad]]) == [None] and tier.error_counts() == {kind: 1}


def test_a_flipped_payload_byte_in_the_file_is_a_counted_miss(db_path: str) -> None:
    items = _stored(db_path, 3)
    marker = items[1][2][1000:1032]
    path = os.path.join(db_path, "data.mdb")
    with open(path, "r+b") as f:
        raw = f.read()
        where = raw.find(marker)
        assert where > 0 and raw.find(marker, where + 1) < 0
        f.seek(where + 5)
        f.write(bytes([raw[where + 5] ^ 0x10]))
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        assert dict(tier.headers())[items[1][0]] == items[1][1]  # the header is intact
        _assert_dropped(tier, items, 1, "checksum")
        assert tier.read_into(items[0][0], bytearray(BLOCK)) == items[0][1]
    finally:
        tier.close()
    tier = DiskTier(db_path, capacity_bytes=CAP)  # the corrupt entry was deleted for good
    try:
        assert len(tier) == 2 and tier.get([items[1][0]]) == [None]
    finally:
        tier.close()


def test_a_truncated_value_is_a_short_miss(db_path: str) -> None:
    items = _stored(db_path, 3)
    _rewrite(db_path, items[2][0], lambda v: v[:-1])
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        _assert_dropped(tier, items, 2, "short")
    finally:
        tier.close()


def test_a_value_cut_inside_its_header_is_a_short_miss(db_path: str) -> None:
    items = _stored(db_path, 2)
    _rewrite(db_path, items[0][0], lambda v: v[:40])
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        _assert_dropped(tier, items, 0, "short")
    finally:
        tier.close()


def test_a_value_with_a_bad_magic_is_a_counted_miss(db_path: str) -> None:
    items = _stored(db_path, 2)
    _rewrite(db_path, items[1][0], lambda v: b"JUNK" + v[4:])
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        _assert_dropped(tier, items, 1, "magic")
    finally:
        tier.close()


def test_a_corrupt_header_entry_is_skipped_by_the_rebuild_and_counted(db_path: str) -> None:
    items = _stored(db_path, 3)
    _rewrite(db_path, items[0][0], lambda v: v[:10] + bytes([v[10] ^ 1]) + v[11:], b"headers")
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        assert dict(tier.headers()) == {key: header for key, header, _ in items[1:]}
        assert tier.error_counts() == {"header": 1}
        assert tier.take_failed() == [items[0][0]] and len(tier) == 2
        assert tier.get([key for key, _, _ in items]) == [None, items[1][2], items[2][2]]
    finally:
        tier.close()


def test_a_full_map_refuses_cleanly_and_the_tier_works_again_after_deletes(db_path: str) -> None:
    tier = DiskTier(db_path, capacity_bytes=64 << 20, map_bytes=2 << 20)
    try:
        items = [block(i, 256 * 1024) for i in range(12)]
        results = [tier.put([item], durable=True)[0] for item in items]
        first_refused = results.index(False)
        assert 2 <= first_refused < 8 and not any(results[first_refused:])
        held = items[:first_refused]
        assert tier.error_counts()["full"] == len(items) - first_refused
        assert tier.take_failed() == [key for key, _, _ in items[first_refused:]]
        assert len(tier) == first_refused
        assert tier.used_bytes == sum(tier.entry_bytes(h) for _, h, _ in held)
        assert tier.get([key for key, _, _ in held]) == [p for _, _, p in held]
        assert tier.delete([held[0][0], held[1][0]]) == 2
        assert tier.put([items[-1]], durable=True) == [True]
        assert tier.get([items[-1][0], held[2][0]]) == [items[-1][2], held[2][2]]
    finally:
        tier.close()
    tier = DiskTier(db_path, capacity_bytes=64 << 20, map_bytes=2 << 20)
    try:
        assert len(tier) == first_refused - 1 and tier.get([items[-1][0]]) == [items[-1][2]]
    finally:
        tier.close()


def test_a_failing_file_system_refuses_writes_and_the_tier_keeps_serving(db_path: str) -> None:
    # A child with RLIMIT_FSIZE: writing past the limit fails (EFBIG, as a full file system
    # would), preallocation for writemap fails first, so the tier falls back to plain writes.
    out, _ = finish(run_child(f"""
        import json, resource, signal
        from tests.tiers.conftest import block
        from asymcache.tiers.disk import DiskTier
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
        tier = DiskTier({db_path!r}, capacity_bytes=64 << 20)
        small, big, late = block(1, 64 * 1024), block(2, 2 << 20), block(3, 64 * 1024)
        report = {{"writemap": tier.writemap,
                  "puts": [tier.put([small], durable=True)[0], tier.put([big], durable=True)[0]]}}
        report["failed"] = [k.hex() for k in tier.take_failed()]
        report["errors"] = tier.error_counts()
        report["late"] = tier.put([late], durable=True)[0]
        report["intact"] = tier.get([small[0], late[0], big[0]]) == [small[2], late[2], None]
        tier.close()
        print(json.dumps(report))
    """))
    report = json.loads(out)
    assert report["writemap"] is False
    assert report["puts"] == [True, False]
    assert report["failed"] == [block(2)[0].hex()]
    assert set(report["errors"]) <= {"io", "full"} and sum(report["errors"].values()) == 1
    assert report["late"] is True and report["intact"] is True


def test_a_value_stored_under_another_key_is_a_counted_key_miss(db_path: str) -> None:
    items = _stored(db_path, 3)
    env = lmdb.open(db_path, max_dbs=3, map_size=1 << 30)
    data = env.open_db(b"data")
    with env.begin() as txn:
        other = bytes(txn.get(items[0][0], db=data))
    env.close()
    _rewrite(db_path, items[2][0], lambda v: other)  # block 0's intact value, under key 2
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        _assert_dropped(tier, items, 2, "key")  # never block 0's bytes for block 2
    finally:
        tier.close()


def _as_version_1(value: bytes) -> bytes:
    """A format-2 value (or header) re-encoded as format 1: no key field, digest recomputed."""
    n_layout = struct.unpack_from("<H", value, 6)[0]
    end = 80 + (n_layout + 7) // 8 * 8
    head = bytearray(value[:8] + value[24:end])
    struct.pack_into("<H", head, 4, 1)
    return bytes(head) + struct.pack("<Q", checksum(head)) + value[end + 8:]


def test_format_version_1_entries_are_dropped_by_the_rebuild_and_counted(db_path: str) -> None:
    items = _stored(db_path, 3)
    for key, _, _ in items:
        _rewrite(db_path, key, _as_version_1, b"data")
        _rewrite(db_path, key, _as_version_1, b"headers")
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        assert list(tier.headers()) == [] and tier.error_counts() == {"version": 3}
        assert sorted(tier.take_failed()) == sorted(key for key, _, _ in items)
        assert len(tier) == 0 and tier.get([key for key, _, _ in items]) == [None] * 3
        assert tier.put(items, durable=True) == [True] * 3  # rewritten in format 2
        assert tier.get([key for key, _, _ in items]) == [p for _, _, p in items]
    finally:
        tier.close()


def test_a_delete_refused_by_a_full_disk_is_sent_again_once_a_write_lands(db_path: str) -> None:
    """LMDB needs free pages to delete too: a delete that fails (``full``) is kept and sent
    again after the next write that lands, so no value stays in the file unindexed."""
    tier = DiskTier(db_path, capacity_bytes=4 << 20)
    try:
        items = [block(i) for i in range(3)]
        assert tier.put(items, durable=True) == [True] * 3
        real, full = tier._store._commit, [True]

        def commit(ops: list) -> None:
            if full[0] and any(op.value is None for op in ops):
                raise lmdb.MapFullError("mdb_txn_commit: MDB_MAP_FULL")
            real(ops)

        tier._store._commit = commit  # the disk is full: every transaction with a delete fails
        assert tier.delete([items[0][0]]) == 1
        tier.flush()
        stored = {key for key, _ in tier._store.sizes()}
        assert items[0][0] in stored and tier.contains([items[0][0]]) == [False]  # unindexed
        full[0] = False
        assert tier.put([block(7)], durable=True) == [True]  # a write lands: the delete goes again
        tier.flush()
        assert tier.retried_deletes == 1
        assert items[0][0] not in {key for key, _ in tier._store.sizes()}
        assert tier.get([items[1][0]])[0] is not None  # the others are untouched
    finally:
        tier.close()
