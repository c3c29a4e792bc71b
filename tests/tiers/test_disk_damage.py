"""A damaged disk tier never keeps the daemon from starting and is never trusted: unreadable meta
pages, corrupted B-tree pages, a foreign format tag and the damage marker of an earlier process
each move the directory aside (kept for inspection), open an empty tier, and count the damage.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

import lmdb
import pytest

from asymcache.cacheserver.startup import DISK_DIRNAME
from asymcache.tiers.disk import DiskTier
from asymcache.tiers.lmdb_store import DAMAGED_MARKER, FORMAT_TAG
from tests.cacheserver.daemon_fixtures import make_refs, payload, registered_client
from tests.tiers.conftest import block

CAP = 8 << 20
_P_LEAF, _P_OVERFLOW = 0x02, 0x04  # LMDB page flags (mdb.c)


def _stored(db_path: str, n: int = 40, nbytes: int = 1024) -> list[tuple]:
    items = [block(i, nbytes) for i in range(n)]
    tier = DiskTier(db_path, capacity_bytes=CAP)
    assert tier.put(items, durable=True) == [True] * n
    tier.close()
    return items


def _page_size(db_path: str) -> int:
    env = lmdb.open(db_path, max_dbs=3, readonly=True, lock=False)
    try:
        return env.stat()["psize"]
    finally:
        env.close()


def _overwrite_meta_pages(db_path: str) -> None:
    size = _page_size(db_path)
    with open(os.path.join(db_path, "data.mdb"), "r+b") as f:
        f.write(b"\xa5" * 2 * size)


def _retype_leaf_pages(db_path: str) -> int:
    """Flag every B-tree leaf page past the meta pages as an overflow page: any walk of a tree
    meets a page of the wrong type. Returns how many were changed."""
    size, changed = _page_size(db_path), 0
    with open(os.path.join(db_path, "data.mdb"), "r+b") as f:
        raw = bytearray(f.read())
        for at in range(2 * size, len(raw), size):
            (flags,) = struct.unpack_from("<H", raw, at + 10)  # after pgno (8) and pad (2)
            if flags & _P_LEAF:
                struct.pack_into("<H", raw, at + 10, _P_OVERFLOW)
                changed += 1
        f.seek(0)
        f.write(raw)
    return changed


def _set_format(db_path: str, tag: bytes) -> None:
    env = lmdb.open(db_path, max_dbs=3, map_size=1 << 30)
    meta = env.open_db(b"meta")
    with env.begin(write=True) as txn:
        txn.put(b"format", tag, db=meta)
    env.close()


def _asides(db_path: str) -> list[Path]:
    path = Path(db_path)
    return sorted(path.parent.glob(path.name + ".damaged-*"))


@pytest.mark.parametrize("damage", ["meta pages", "leaf pages", "foreign format", "marker"])
def test_a_damaged_environment_is_moved_aside_and_the_tier_starts_empty(
        db_path: str, damage: str) -> None:
    items = _stored(db_path)
    before = (Path(db_path) / "data.mdb").read_bytes()
    if damage == "meta pages":
        _overwrite_meta_pages(db_path)
    elif damage == "leaf pages":
        assert _retype_leaf_pages(db_path) > 0
    elif damage == "foreign format":
        _set_format(db_path, b"asymcache-disk-v99")
    else:
        (Path(db_path) / DAMAGED_MARKER).write_text("found corruption\n")
    damaged = (Path(db_path) / "data.mdb").read_bytes()
    assert damaged != before or damage == "marker"

    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        assert len(tier) == 0 and list(tier.headers()) == []
        assert tier.error_counts() == {"damaged_file": 1}
        aside = _asides(db_path)
        assert [str(a) for a in aside] == [tier.damaged_dir]
        assert (aside[0] / "data.mdb").read_bytes() == damaged  # kept as it was, for a person
        assert tier.get([items[0][0]]) == [None]
        assert tier.put(items[:3], durable=True) == [True] * 3  # and it works as a fresh tier
        assert tier.get([items[1][0]]) == [items[1][2]]
    finally:
        tier.close()
    reopened = DiskTier(db_path, capacity_bytes=CAP)  # the fresh one is trusted next time
    try:
        assert len(reopened) == 3 and reopened.error_counts() == {}
        assert reopened.damaged_dir is None
    finally:
        reopened.close()


def test_only_the_newest_moved_aside_copy_is_kept(db_path: str) -> None:
    for _ in range(3):
        _stored(db_path, n=4)
        _overwrite_meta_pages(db_path)
        DiskTier(db_path, capacity_bytes=CAP).close()
    assert len(_asides(db_path)) == 1


def test_a_healthy_environment_is_not_touched(db_path: str) -> None:
    items = _stored(db_path)
    _set_format(db_path, FORMAT_TAG)
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        assert len(tier) == len(items) and tier.damaged_dir is None and _asides(db_path) == []
        assert tier.get([items[5][0]]) == [items[5][2]]
    finally:
        tier.close()


def test_damage_found_while_running_stops_writes_and_is_moved_aside_at_the_next_start(
        db_path: str) -> None:
    items = _stored(db_path, n=4)
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        tier._store.mark_damaged(lmdb.CorruptedError("a page of the wrong type"))
        assert tier.put([block(99, 1024)], durable=True) == [False]
        assert (Path(db_path) / DAMAGED_MARKER).exists()
    finally:
        tier.close()
    tier = DiskTier(db_path, capacity_bytes=CAP)
    try:
        assert len(tier) == 0 and tier.error_counts() == {"damaged_file": 1}
        assert tier.get([items[0][0]]) == [None]
    finally:
        tier.close()


def test_a_daemon_on_a_damaged_disk_tier_starts_serves_and_reports_it(start_daemon,
                                                                       tmp_path: Path) -> None:
    data = tmp_path / "daemon-data"
    d = start_daemon(data_dir=data)
    c = registered_client(d.endpoint)
    refs = make_refs(2)
    assert c.put(refs, [payload(r) for r in refs], durable=True).durable
    c.close()
    d.stop()
    _overwrite_meta_pages(str(data / DISK_DIRNAME))
    d = start_daemon(data_dir=data)  # must not fail, nor crash-loop
    c = registered_client(d.endpoint)
    assert c.get([r.key for r in refs]) == [None, None]  # recomputed, never misread
    assert c.stats()["tiers"]["disk"]["errors"] == {"damaged_file": 1}
    assert c.put(refs, [payload(r) for r in refs], durable=True).durable
    assert [bytes(b) for b in c.get([r.key for r in refs])] == [payload(r) for r in refs]
    c.close()
