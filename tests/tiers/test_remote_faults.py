"""The remote tier when its cluster fails: dead and frozen nodes, no cluster at start, auth, TLS.

Each test gets a cluster of its own (real ``redis-server`` processes on loopback). The bounds on
elapsed time are liveness checks (a request never waits more than a few socket timeouts), with a
ten-fold margin; they do not measure speed.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

from redis.crc import key_slot

from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from asymcache.tiers.remote import RemoteTier
from asymcache.tiers.remote_config import RemoteTierConfig
from tests.redis_cluster import (  # noqa: F401
    fresh_cluster,
    idle_cluster,
    make_certs,
    unique_prefix,
    wait_until,
)
from tests.tiers.conftest import block

TIMEOUT_S = 1.0  # generous: a loaded CI machine must not time out a live node
STALL_BOUND_S = 10 * TIMEOUT_S


def open_tier(cluster: LocalRedisCluster, wait: bool = True, **options) -> RemoteTier:
    options.setdefault("prefix", unique_prefix())
    cfg = RemoteTierConfig(cluster.nodes, 64 << 20, socket_timeout_s=TIMEOUT_S,
                           connect_timeout_s=TIMEOUT_S, retry_min_s=0.1, retry_max_s=0.5,
                           probe_bytes=0, **options)
    tier = RemoteTier(cfg)
    if wait:
        assert wait_until(lambda: tier.ready, 15), f"never ready: {tier.link.last_error}"
    return tier


def on_node(cluster: LocalRedisCluster, tier: RemoteTier, key: bytes) -> int:
    """Index of the master that serves ``key``."""
    slot = key_slot(tier.redis_key(key))
    return next(i for i in range(len(cluster.ports))
                if cluster.slot_range(i)[0] <= slot <= cluster.slot_range(i)[1])


def timed_get(tier: RemoteTier, keys: list[bytes]) -> tuple[list[bool], float]:
    start = time.monotonic()
    found = [b is not None for b in tier.get(keys)]
    return found, time.monotonic() - start


def test_killed_node_misses_its_slots_while_the_rest_hit(fresh_cluster: LocalRedisCluster  # noqa: F811
                                                         ) -> None:
    tier = open_tier(fresh_cluster)
    try:
        items = [block(i, 16 << 10) for i in range(60)]
        assert tier.put(items, durable=True) == [True] * 60
        keys = [k for k, _, _ in items]
        alive = [on_node(fresh_cluster, tier, k) != 1 for k in keys]
        assert 0 < sum(alive) < 60
        fresh_cluster.stop_node(1)
        for _ in range(2):  # first: connection refused; then: the node is skipped
            found, elapsed = timed_get(tier, keys)
            assert found == alive and elapsed < STALL_BOUND_S
        errors = tier.error_counts()
        assert errors["connection"] + errors["unavailable"] == 2 * (60 - sum(alive))
        assert tier.contains(keys) == alive and tier.ready
        more = [block(i, 16 << 10) for i in range(100, 130)]
        assert tier.put(more) == [True] * 30
        tier.flush()
        lost = {k for k, _, _ in more if on_node(fresh_cluster, tier, k) == 1}
        assert set(tier.take_failed()) == lost and lost
        fresh_cluster.start_node(1)
        fresh_cluster.wait_ok()  # writes need the restarted node to rejoin, not just to answer
        assert wait_until(lambda: not tier.link.skipped(), 15)
        assert tier.put(more, durable=True) == [True] * 30
        assert all(found for found in timed_get(tier, [k for k, _, _ in more])[0])
    finally:
        tier.close()


def test_frozen_node_times_out_within_its_socket_timeout(fresh_cluster: LocalRedisCluster  # noqa: F811
                                                         ) -> None:
    tier = open_tier(fresh_cluster)
    try:
        items = [block(i, 16 << 10) for i in range(30)]
        assert tier.put(items, durable=True) == [True] * 30
        keys = [k for k, _, _ in items]
        alive = [on_node(fresh_cluster, tier, k) != 2 for k in keys]
        fresh_cluster.signal_node(2, signal.SIGSTOP)
        try:
            found, elapsed = timed_get(tier, keys)
            assert found == alive and elapsed < STALL_BOUND_S
            assert tier.error_counts()["timeout"] == 30 - sum(alive)
            found, elapsed = timed_get(tier, keys)
            assert found == alive and elapsed < STALL_BOUND_S
        finally:
            fresh_cluster.signal_node(2, signal.SIGCONT)
        assert wait_until(lambda: not tier.link.skipped(), 15)
        assert timed_get(tier, keys)[0] == [True] * 30
    finally:
        tier.close()


def test_cluster_down_at_start_is_picked_up_when_it_comes(idle_cluster: LocalRedisCluster  # noqa: F811
                                                          ) -> None:
    tier = open_tier(idle_cluster, wait=False)
    try:
        key, header, payload = block(1)
        assert not tier.ready
        assert tier.put([(key, header, payload)]) == [False]
        found, elapsed = timed_get(tier, [key])
        assert found == [False] and elapsed < STALL_BOUND_S
        assert tier.contains([key]) == [False]
        assert tier.error_counts()["unavailable"] == 3
        tier.flush()  # nothing queued: returns at once
        idle_cluster.start()
        assert wait_until(lambda: tier.ready, 20), tier.link.last_error
        assert tier.put([(key, header, payload)], durable=True) == [True]
        assert bytes(tier.get([key])[0]) == payload
    finally:
        tier.close()


def test_password_and_acl_user_are_passed_to_every_node(tmp_path: Path) -> None:
    with LocalRedisCluster(tmp_path / "redis", password="pw-1") as cluster:
        key, header, payload = block(4)
        good = open_tier(cluster, password="pw-1")
        assert good.put([(key, header, payload)], durable=True) == [True]
        assert bytes(good.get([key])[0]) == payload
        good.close()
        wrong = open_tier(cluster, wait=False, password="nope")
        assert not wait_until(lambda: wrong.ready, 1.5)
        assert "password" in wrong.link.last_error.lower()
        wrong.close()
        for i in range(3):
            cluster.command(i, "ACL", "SETUSER", "kv", "on", ">kv-pw", "~acl:*", "+@all")
        user = open_tier(cluster, username="kv", password="kv-pw", prefix="acl:")
        assert user.put([(key, header, payload)], durable=True) == [True]
        assert bytes(user.get([key])[0]) == payload
        user.close()
        fenced = open_tier(cluster, username="kv", password="kv-pw", prefix="other:")
        assert fenced.put([(key, header, payload)], durable=True) == [False]
        assert fenced.get([key]) == [None]
        assert fenced.error_counts()["auth"] == 2
        fenced.close()


def test_tls_options_reach_every_node(tmp_path: Path) -> None:
    certs = make_certs(tmp_path / "certs")
    with LocalRedisCluster(tmp_path / "redis", tls=certs) as cluster:
        key, header, payload = block(6)
        tier = open_tier(cluster, tls=True, tls_ca_file=certs[0])
        assert tier.put([(key, header, payload)], durable=True) == [True]
        assert bytes(tier.get([key])[0]) == payload
        tier.close()
        plain = open_tier(cluster, wait=False)
        assert not wait_until(lambda: plain.ready, 1.0)
        plain.close()
