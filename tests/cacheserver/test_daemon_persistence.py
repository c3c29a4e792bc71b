"""Blocks on disk survive restarts and crashes; bad disk values are misses, never wrong bytes."""

from __future__ import annotations

import lmdb

from asymcache.cacheserver.protocol import PROTOCOL_VERSION, Where
from asymcache.cacheserver.startup import DISK_DIRNAME
from tests.cacheserver.daemon_fixtures import (
    make_refs,
    payload,
    registered_client,
)


def _put_durable(endpoint: str, n: int) -> list:
    refs = make_refs(n)
    with registered_client(endpoint) as c:
        put = c.put(refs, [payload(r) for r in refs], durable=True)
        assert put.stored == [True] * n and put.durable
    return refs


def _get(endpoint: str, refs: list) -> list:
    with registered_client(endpoint) as c:
        return [None if g is None else bytes(g) for g in c.get([r.key for r in refs])]


def test_durable_put_survives_a_graceful_restart(start_daemon, tmp_path) -> None:
    d = start_daemon()
    refs = _put_durable(d.endpoint, 5)
    assert d.stop() == 0
    d2 = start_daemon(data_dir=tmp_path / "data")
    assert _get(d2.endpoint, refs) == [payload(r) for r in refs]
    with registered_client(d2.endpoint) as c:
        assert c.lookup([r.key for r in refs], lease=False).where == [Where.DISK] * 5


def test_durable_put_survives_sigkill(start_daemon, tmp_path) -> None:
    d = start_daemon()
    refs = _put_durable(d.endpoint, 4)
    d.kill()
    d2 = start_daemon(data_dir=tmp_path / "data")
    assert _get(d2.endpoint, refs) == [payload(r) for r in refs]


def test_graceful_stop_flushes_pending_disk_writes(start_daemon, tmp_path) -> None:
    d = start_daemon(cpu_bytes="16KiB")  # 2 CPU slots: PUTs beyond them demote to disk
    refs = make_refs(6)
    with registered_client(d.endpoint) as c:
        for r in refs:
            assert c.put([r], [payload(r)]).stored == [True]  # not durable: queued writes
    assert d.stop() == 0  # SIGTERM: shutdown flushes the queue
    d2 = start_daemon(data_dir=tmp_path / "data", cpu_bytes="16KiB")
    # LRU: the 4 oldest were demoted to disk and are back with their bytes; the 2 newest were
    # only in the CPU tier
    assert _get(d2.endpoint, refs) == [payload(r) for r in refs[:4]] + [None, None]


def _corrupt_one_value(data_dir, key: bytes) -> None:
    env = lmdb.open(str(data_dir / DISK_DIRNAME), max_dbs=4, subdir=True, lock=True)
    try:
        db = env.open_db(b"data")
        with env.begin(write=True) as txn:
            value = bytearray(txn.get(key, db=db))
            value[-1] ^= 0xFF  # flip the last payload byte
            txn.put(key, bytes(value), db=db)
    finally:
        env.close()


def test_corrupted_disk_value_is_a_counted_miss(start_daemon, tmp_path) -> None:
    d = start_daemon()
    refs = _put_durable(d.endpoint, 3)
    d.stop()
    _corrupt_one_value(tmp_path / "data", refs[1].key)
    d2 = start_daemon(data_dir=tmp_path / "data")
    got = _get(d2.endpoint, refs)
    assert got == [payload(refs[0]), None, payload(refs[2])]
    with registered_client(d2.endpoint) as c:
        assert c.stats()["tiers"]["disk"]["errors"].get("checksum") == 1
        assert c.lookup([refs[1].key], lease=False).where == [Where.MISS]  # forgotten


def test_full_disk_evicts_to_stay_within_capacity(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB", disk_bytes="64KiB")
    refs = make_refs(40)
    with registered_client(d.endpoint) as c:
        put = c.put(refs, [payload(r) for r in refs], durable=True)
        tiers = c.stats()["tiers"]
        kept = tiers["disk"]["blocks"]  # LRU: the newest blocks, on disk (the 2 newest in CPU)
        assert 2 < kept < 40 and tiers["disk"]["evictions"] == 40 - kept
        # the reply says what this PUT's own later blocks left of it: not stored, not durable
        assert put.stored == [False] * (40 - kept) + [True] * kept
        assert not put.durable
        got = [None if g is None else bytes(g) for g in c.get([r.key for r in refs])]
        assert got == [payload(r) if ok else None for r, ok in zip(refs, put.stored, strict=True)]


def test_durable_put_that_fits_is_durable_and_every_block_stored(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB", disk_bytes="64KiB")
    refs = make_refs(5)
    with registered_client(d.endpoint) as c:
        put = c.put(refs, [payload(r) for r in refs], durable=True)
        assert put.stored == [True] * 5 and put.durable
        assert c.stats()["tiers"]["disk"]["blocks"] == 5


def test_full_lmdb_map_refuses_cleanly_and_keeps_serving(start_daemon) -> None:
    d = start_daemon(disk_bytes="64MiB", disk_map_bytes="64KiB")
    refs = make_refs(30)
    with registered_client(d.endpoint) as c:
        put = c.put(refs, [payload(r) for r in refs], durable=True)
        assert put.stored == [True] * 30  # the CPU tier still holds them
        assert not put.durable  # some writes failed: the map is full
        stats = c.stats()
        assert stats["tiers"]["disk"]["errors"].get("full", 0) > 0
        assert stats["tiers"]["disk"]["blocks"] < 30
        assert [bytes(g) for g in c.get([r.key for r in refs])] == [payload(r) for r in refs]
        assert c.ping().version == PROTOCOL_VERSION
