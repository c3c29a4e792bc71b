"""Two daemons sharing blocks through a real Redis Cluster (three masters on loopback).

Each daemon has its own CPU tier and data directory, as on two hosts. Blocks enter the CPU tier of
daemon ``a`` (an engine's copy and COMMIT, or PUT); an engine client of daemon ``b`` finds them as
REMOTE and PROMOTEs them into ``b``'s CPU tier. Time bounds are liveness checks with a wide
margin over the configured ``remote_timeout_s``, never speed measurements.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

from redis.crc import key_slot

from asymcache.cacheserver.protocol import BlockRef, Where
from asymcache.engine.client import CacheClient
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from asymcache.tiers.base import BlockHeader
from asymcache.tiers.codec import encode_value
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    free_port,
    make_refs,
    payload,
)
from tests.redis_cluster import (
    unique_prefix,
    wait_until,
)

TIMEOUT_S = 1.0
STALL_BOUND_S = 10 * TIMEOUT_S


def remote_flags(cluster: LocalRedisCluster, prefix: str, **more: object) -> dict:
    return {"remote_nodes": ",".join(cluster.nodes), "remote_prefix": prefix,
            "remote_timeout_s": TIMEOUT_S, **more}


def client(endpoint: str, engine_id: str) -> CacheClient:
    c = CacheClient(endpoint, engine_id=engine_id, timeout_s=30, heartbeat=False)
    c.hello("test-model", LAYOUT, gpu_slots=4)
    return c


def wait_remote_ready(c: CacheClient, timeout: float = 20.0) -> None:
    assert wait_until(lambda: c.stats()["tiers"]["remote"]["ready"], timeout), c.stats()


def commit_on_cpu(c: CacheClient, refs: list[BlockRef]) -> None:
    """An engine's demotion: copy each block into a reserved CPU slot, then COMMIT it."""
    slots = c.reserve_cpu(refs)
    assert min(slots) >= 0
    for ref, slot in zip(refs, slots, strict=True):
        c.cpu_slot(slot)[:BLOCK_BYTES] = payload(ref)
    assert c.commit(refs, slots, tier="cpu") == [True] * len(refs)


def promoted_bytes(c: CacheClient, refs: list[BlockRef]) -> list[bytes | None]:
    slots = c.promote([r.key for r in refs])
    return [bytes(c.cpu_slot(s)[:BLOCK_BYTES]) if s >= 0 else None for s in slots]


def two_hosts(start, tmp_path: Path, flags: dict) -> tuple[CacheClient, CacheClient, object]:
    a = start(data_dir=tmp_path / "a", **flags)
    b = start(data_dir=tmp_path / "b", **flags)
    ca, cb = client(a.endpoint, "engine-a"), client(b.endpoint, "engine-b")
    wait_remote_ready(ca)
    wait_remote_ready(cb)
    return ca, cb, b


def test_a_block_committed_on_one_host_is_promoted_with_identical_bytes_on_another(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    port = free_port()
    a = start_daemon(data_dir=tmp_path / "a", **remote_flags(redis_cluster, unique_prefix()))
    flags = remote_flags(redis_cluster, a.flags["remote_prefix"], metrics_port=port)
    b = start_daemon(data_dir=tmp_path / "b", **flags)
    refs = make_refs(4)
    keys = [r.key for r in refs]
    with client(a.endpoint, "engine-a") as ca, client(b.endpoint, "engine-b") as cb:
        wait_remote_ready(ca)
        wait_remote_ready(cb)  # b asks the cluster below: it must have connected
        commit_on_cpu(ca, refs)
        ca.flush()  # the shared copies are sent
        assert cb.lookup(keys, lease=False).where == [Where.MISS] * 4  # a client of old
        assert cb.lookup(keys, lease=False, remote=True).where == [Where.REMOTE] * 4
        assert promoted_bytes(cb, refs) == [payload(r) for r in refs]
        assert cb.lookup(keys, lease=False, remote=True).where == [Where.CPU] * 4
        remote = cb.stats()["tiers"]["remote"]
        assert (remote["hits"], remote["blocks"], remote["errors"]) == (4, 4, {})
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
        assert "asymcache_tier_remote_ready 1.0" in metrics
        assert f'asymcache_tier_moved_bytes_total{{direction="remote_to_cpu"}} ' \
               f'{4.0 * BLOCK_BYTES}' in metrics
        others = make_refs(3, start=10_000)
        assert ca.put(others, [payload(r) for r in others]).stored == [True] * 3
        ca.flush()
        assert [bytes(g) for g in cb.get([r.key for r in others])] == \
            [payload(r) for r in others]  # GET reads through to the remote tier


def test_two_cache_salts_never_see_each_others_blocks_across_hosts(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(redis_cluster, unique_prefix())
    ca, cb, _ = two_hosts(start_daemon, tmp_path, flags)
    with ca, cb:
        a, b = make_refs(4, salt="tenant-a"), make_refs(4, salt="tenant-b")  # same tokens
        commit_on_cpu(ca, a)
        ca.flush()
        assert cb.lookup([r.key for r in b], lease=False, remote=True).where == [Where.MISS] * 4
        assert cb.promote([r.key for r in b]) == [-1] * 4
        assert cb.lookup([r.key for r in a], lease=False, remote=True).where == \
            [Where.REMOTE] * 4


def test_corrupted_remote_value_is_a_miss_and_counted(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(redis_cluster, unique_prefix())
    ca, cb, _ = two_hosts(start_daemon, tmp_path, flags)
    with ca, cb:
        refs = make_refs(2)
        commit_on_cpu(ca, refs)
        ca.flush()
        ref = refs[0]
        header = BlockHeader.describe(ref.namespace, bytes(16), 0, LAYOUT.canonical(),
                                      payload(ref))
        value = bytearray(encode_value(header, payload(ref), key=ref.key))
        value[-1] ^= 0xFF
        rkey = (flags["remote_prefix"] + ref.key.hex()).encode()
        redis_cluster.command(_node_of(redis_cluster, rkey), "SET", rkey, bytes(value))
        assert promoted_bytes(cb, refs) == [None, payload(refs[1])]
        assert cb.stats()["tiers"]["remote"]["errors"] == {"checksum": 1}
        cb.flush()
        assert cb.lookup([ref.key], lease=False, remote=True).where == [Where.MISS]


def _node_of(cluster: LocalRedisCluster, rkey: bytes) -> int:
    slot = key_slot(rkey)
    return next(i for i in range(len(cluster.ports))
                if cluster.slot_range(i)[0] <= slot <= cluster.slot_range(i)[1])


def test_killed_node_misses_its_slots_while_the_rest_hit_and_the_daemon_serves(
        start_daemon, fresh_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(fresh_cluster, "kill:")
    ca, cb, _ = two_hosts(start_daemon, tmp_path, flags)
    with ca, cb:
        refs = make_refs(24)
        commit_on_cpu(ca, refs)
        ca.flush()
        alive = [_node_of(fresh_cluster, f"kill:{r.key.hex()}".encode()) != 1 for r in refs]
        assert 0 < sum(alive) < len(refs)
        fresh_cluster.stop_node(1)
        start = time.monotonic()
        where = cb.lookup([r.key for r in refs], lease=False, remote=True).where
        assert where == [Where.REMOTE if a else Where.MISS for a in alive]
        got = promoted_bytes(cb, refs)
        assert got == [payload(r) if a else None for r, a in zip(refs, alive, strict=True)]
        assert time.monotonic() - start < STALL_BOUND_S
        assert cb.ping().registered
        errors = cb.stats()["tiers"]["remote"]["errors"]
        assert errors.get("connection", 0) + errors.get("unavailable", 0) >= 24 - sum(alive)


def test_cluster_down_at_daemon_start_is_picked_up_when_it_comes(
        start_daemon, idle_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(idle_cluster, "late:")
    a = start_daemon(data_dir=tmp_path / "a", **flags)
    with client(a.endpoint, "engine-a") as ca:
        early = make_refs(2)
        assert ca.put(early, [payload(r) for r in early]).stored == [True, True]  # CPU only
        assert ca.stats()["tiers"]["remote"]["ready"] is False
        start = time.monotonic()
        assert ca.lookup([r.key for r in make_refs(2, start=500)], remote=True).where == \
            [Where.MISS] * 2
        assert time.monotonic() - start < STALL_BOUND_S
        idle_cluster.start()
        wait_remote_ready(ca)
        late = make_refs(3, start=1000)
        commit_on_cpu(ca, late)
        ca.flush()
    b = start_daemon(data_dir=tmp_path / "b", **flags)
    with client(b.endpoint, "engine-b") as cb:
        wait_remote_ready(cb)
        assert promoted_bytes(cb, late) == [payload(r) for r in late]


def test_cpu_victims_are_demoted_to_the_remote_tier_and_promoted_back(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(redis_cluster, unique_prefix(), remote_write_through="false",
                         cpu_bytes="16KiB", disk_bytes=0)  # two CPU slots, no disk
    a = start_daemon(data_dir=tmp_path / "a", **flags)
    with client(a.endpoint, "engine-a") as ca:
        wait_remote_ready(ca)
        refs = make_refs(5)
        assert ca.put(refs, [payload(r) for r in refs]).stored == [True] * 5
        ca.flush()
        tiers = ca.stats()["tiers"]
        assert (tiers["cpu"]["blocks"], tiers["remote"]["blocks"]) == (2, 3)
        assert tiers["cpu"]["demotions"] == 3
        where = ca.lookup([r.key for r in refs], lease=False, remote=True).where
        assert where == [Where.REMOTE] * 3 + [Where.CPU] * 2
        assert promoted_bytes(ca, refs[:2]) == [payload(r) for r in refs[:2]]
