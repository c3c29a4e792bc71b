"""The remote tier against a real three-master Redis Cluster on loopback (shared by this module).

Each test writes under its own key prefix, so tests never see each other's blocks.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from redis.cluster import ClusterNode, RedisCluster

from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from asymcache.tiers.base import BlockHeader, create_tier
from asymcache.tiers.codec import encode_value
from asymcache.tiers.remote import RemoteTier
from asymcache.tiers.remote_config import RemoteTierConfig
from tests.redis_cluster import redis_cluster, unique_prefix, wait_until  # noqa: F401
from tests.tiers.conftest import LAYOUT, block

MiB = 1 << 20


def open_tier(cluster: LocalRedisCluster, prefix: str | None = None, **options) -> RemoteTier:
    """A remote tier on ``cluster``, waited for (bounded) until it is ready."""
    cfg = RemoteTierConfig(cluster.nodes, options.pop("capacity_bytes", 64 * MiB),
                           prefix=prefix or unique_prefix(), socket_timeout_s=2.0,
                           connect_timeout_s=2.0, probe_bytes=64 << 10, **options)
    tier = RemoteTier(cfg)
    assert wait_until(lambda: tier.ready, 15), f"tier never ready: {tier.link.last_error}"
    return tier


@pytest.fixture
def tier(redis_cluster: LocalRedisCluster) -> Iterator[RemoteTier]:  # noqa: F811
    t = open_tier(redis_cluster)
    yield t
    t.close()


@pytest.fixture
def bare(redis_cluster: LocalRedisCluster) -> Iterator[RedisCluster]:  # noqa: F811
    host, port = redis_cluster.nodes[0].split(":")
    client = RedisCluster(startup_nodes=[ClusterNode(host, int(port))])
    yield client
    client.close()


def test_round_trip_gives_identical_bytes_and_headers(tier: RemoteTier) -> None:
    items = [block(i, 64 << 10) for i in range(24)] + [block(99, 1 * MiB)]
    assert tier.put(items, durable=True) == [True] * len(items)
    keys = [k for k, _, _ in items]
    found = tier.fetch(keys)
    for (_, header, payload), got in zip(items, found, strict=True):
        assert got is not None and got[0] == header and bytes(got[1]) == payload
    assert [bytes(b) for b in tier.get(keys)] == [p for _, _, p in items]
    assert tier.contains([*keys, b"\xee" * 16]) == [True] * len(keys) + [False]
    assert len(tier) == len(items)
    assert tier.used_bytes == sum(tier.entry_bytes(h) for _, h, _ in items)
    assert tier.stats()["hits"] == 2 * len(items)


def test_blocks_put_by_one_tier_are_read_by_another(redis_cluster: LocalRedisCluster) -> None:  # noqa: F811
    prefix = unique_prefix()
    first, second = open_tier(redis_cluster, prefix), open_tier(redis_cluster, prefix)
    try:
        items = [block(i) for i in range(8)]
        assert first.put(items, durable=True) == [True] * 8
        keys = [k for k, _, _ in items]
        assert second.contains(keys) == [True] * 8
        assert [bytes(b) for b in second.get(keys)] == [p for _, _, p in items]
        assert len(second) == 0  # it stored nothing itself
    finally:
        first.close()
        second.close()


def test_adopted_blocks_are_accounted_and_only_forgotten_on_delete(
        redis_cluster: LocalRedisCluster) -> None:  # noqa: F811
    prefix = unique_prefix()
    owner, other = open_tier(redis_cluster, prefix), open_tier(redis_cluster, prefix)
    try:
        key, header, payload = block(9)
        assert owner.put([(key, header, payload)], durable=True) == [True]
        assert other.adopt([(key, header)]) == [True]
        assert len(other) == 1 and other.used_bytes == other.entry_bytes(header)
        assert other.put([(key, header, payload)]) == [True]  # held: not written again
        assert other.delete([key]) == 1
        other.flush()
        assert len(other) == 0 and other.contains([key]) == [True]  # still the owner's
        assert owner.delete([key]) == 1
        owner.flush()
        assert other.contains([key]) == [False]
    finally:
        owner.close()
        other.close()


def test_a_block_is_readable_as_soon_as_put_accepts_it(tier: RemoteTier) -> None:
    key, header, payload = block(7)
    assert tier.put([(key, header, payload)]) == [True]
    assert bytes(tier.get([key])[0]) == payload
    tier.flush()
    assert bytes(tier.get([key])[0]) == payload


def test_a_mutable_payload_is_copied_so_the_caller_may_reuse_it(tier: RemoteTier) -> None:
    key, header, payload = block(8)
    buffer = bytearray(payload)
    assert tier.put([(key, header, memoryview(buffer))]) == [True]
    buffer[:] = bytes(len(buffer))  # the caller reuses its buffer before the write is sent
    tier.flush()
    assert bytes(tier.get([key])[0]) == payload


@pytest.mark.parametrize("damage", ["checksum", "header", "short", "magic", "key"])
def test_corrupted_value_is_a_counted_miss_and_is_deleted(tier: RemoteTier, bare: RedisCluster,
                                                          damage: str) -> None:
    key, header, payload = block(3)
    value = bytearray(encode_value(header, payload, key=key))
    if damage == "checksum":
        value[-1] ^= 0x01
    elif damage == "key":  # an intact value of block 4 under block 3's cluster key
        value = bytearray(encode_value(header, payload, key=block(4)[0]))
    elif damage == "header":
        value[30] ^= 0x80  # inside the namespace: caught by the header digest
    elif damage == "short":
        value = value[:-100]
    else:
        value[0:4] = b"JUNK"
    bare.set(tier.redis_key(key), bytes(value))
    assert tier.contains([key]) == [True]
    assert tier.get([key]) == [None]
    assert tier.error_counts() == {damage: 1}
    tier.flush()
    assert bare.exists(tier.redis_key(key)) == 0


def test_a_corrupt_block_this_tier_stored_is_reported_once(tier: RemoteTier,
                                                           bare: RedisCluster) -> None:
    key, header, payload = block(5)
    assert tier.put([(key, header, payload)], durable=True) == [True]
    bare.set(tier.redis_key(key), b"AKVB" + bytes(200))
    assert tier.get([key]) == [None]
    assert tier.take_failed() == [key] and tier.take_failed() == []
    assert len(tier) == 0 and tier.used_bytes == 0


def test_two_cache_salts_never_see_each_others_blocks(tier: RemoteTier) -> None:
    layout = KVLayout(2, 2, 64, 16, "float16")
    tokens = np.arange(64) % 1000
    ns_a, ns_b = namespace_id("model-x", layout, "tenant-a"), namespace_id("model-x", layout,
                                                                           "tenant-b")
    keys_a, keys_b = block_keys(ns_a, tokens, 16), block_keys(ns_b, tokens, 16)
    assert not set(keys_a) & set(keys_b)
    payload = bytes(range(256)) * 64
    items = [(k, BlockHeader.describe(ns_a, bytes(16), i, layout.canonical(), payload), payload)
             for i, k in enumerate(keys_a)]
    assert tier.put(items, durable=True) == [True] * 4
    assert tier.contains(keys_b) == [False] * 4 and tier.get(keys_b) == [None] * 4
    assert {h.namespace for _, h in tier.headers()} == {ns_a}
    assert all(found is not None and found[0].namespace == ns_a for found in tier.fetch(keys_a))


def test_delete_removes_blocks_from_the_cluster(tier: RemoteTier, bare: RedisCluster) -> None:
    items = [block(i) for i in range(6)]
    tier.put(items, durable=True)
    keys = [k for k, _, _ in items]
    assert tier.delete([*keys[:4], b"\x01" * 16]) == 4
    tier.flush()
    assert tier.contains(keys) == [False] * 4 + [True] * 2
    assert bare.exists(*[tier.redis_key(k) for k in keys[:1]]) == 0
    assert len(tier) == 2


def test_headers_list_every_block_under_the_prefix(tier: RemoteTier) -> None:
    items = [block(i) for i in range(40)]
    tier.put(items, durable=True)
    assert dict(tier.headers()) == {k: h for k, h, _ in items}


def test_capacity_bounds_what_this_tier_stores(redis_cluster: LocalRedisCluster) -> None:  # noqa: F811
    prefix = unique_prefix()
    probe = open_tier(redis_cluster, prefix)
    entry = probe.entry_bytes(block(0)[1])
    probe.close()
    t = open_tier(redis_cluster, prefix, capacity_bytes=3 * entry)
    try:
        items = [block(i) for i in range(5)]
        assert t.put(items, durable=True) == [True, True, True, False, False]
        assert t.used_bytes <= t.capacity_bytes
    finally:
        t.close()


def test_put_refuses_a_header_whose_checksum_does_not_match(tier: RemoteTier) -> None:
    key, header, payload = block(1)
    bad = BlockHeader(header.namespace, header.parent, 1, LAYOUT, header.length, 12345)
    assert tier.put([(key, bad, payload)]) == [False]
    assert tier.error_counts() == {"put_checksum": 1}
    with pytest.raises(ValueError, match=r"header\.length"):
        tier.put([(key, header, payload[:-1])])
    with pytest.raises(ValueError, match="16 bytes"):
        tier.put([(b"short", header, payload)])


def test_ttl_is_set_on_every_stored_block(redis_cluster: LocalRedisCluster,  # noqa: F811
                                          bare: RedisCluster) -> None:
    t = open_tier(redis_cluster, ttl_s=30.0)
    try:
        key, header, payload = block(2)
        t.put([(key, header, payload)], durable=True)
        assert 0 < bare.pttl(t.redis_key(key)) <= 30_000
    finally:
        t.close()


def test_load_figures_are_measured_on_connect_or_configured(tier: RemoteTier,
                                                            redis_cluster: LocalRedisCluster  # noqa: F811
                                                            ) -> None:
    assert wait_until(lambda: tier.load_figures() is not None, 10)
    latency, bandwidth = tier.load_figures()
    assert latency > 0 and bandwidth > 0
    fixed = open_tier(redis_cluster, load_bandwidth_bps=2e9, load_latency_s=3e-4)
    try:
        assert fixed.load_figures() == (3e-4, 2e9)
    finally:
        fixed.close()


def test_remote_is_created_by_name(redis_cluster: LocalRedisCluster) -> None:  # noqa: F811
    cfg = RemoteTierConfig(redis_cluster.nodes, MiB, prefix=unique_prefix())
    t = create_tier("remote", config=cfg)
    try:
        assert isinstance(t, RemoteTier) and t.name == "remote"
    finally:
        t.close()
    with pytest.raises(ValueError, match="RemoteTierConfig"):
        create_tier("remote", config={"nodes": "x:1"})

