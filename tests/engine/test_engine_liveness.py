"""The engine's daemon link has one liveness mechanism, the client's heartbeats (real daemon
processes): they keep an idle engine's leases, tell the link that a restarted daemon forgot it,
and bring the daemon's tiers and remote load figures (no STATS request, no probe socket). Time
bounds are liveness checks with a wide margin, never speed measurements."""

from __future__ import annotations

import time
from pathlib import Path

from asymcache.engine.cache_link import CacheLink
from asymcache.engine.client import CacheClient
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs, payload
from tests.cacheserver.test_daemon_remote import remote_flags
from tests.redis_cluster import unique_prefix, wait_until

LIMIT_S = 15.0


def _link(endpoint: str, sent: list[str]) -> CacheLink:
    """A registered link whose client records the op of every request it sends itself."""
    link = CacheLink(endpoint, "eng", "test-model", LAYOUT, 4, timeout_s=5)
    real = link.client._call
    link.client._call = lambda msg, post: (sent.append(msg.OP), real(msg, post))[1]
    link.tick(lambda: [])
    assert link.connected
    return link


def _daemon_stats(endpoint: str) -> dict:
    with CacheClient(endpoint, heartbeat=False) as c:
        return c.stats()


def test_heartbeats_keep_an_idle_engines_leases_past_the_lease_timeout(start_daemon) -> None:
    d = start_daemon(lease_timeout_s=0.6, disk_bytes=0)
    refs = make_refs(2)
    sent: list[str] = []
    link = _link(d.endpoint, sent)
    try:
        assert link.put(refs, [payload(r) for r in refs]) == [True, True]
        assert [loc.where for loc in link.lookup([r.key for r in refs])] == ["cpu", "cpu"]
        time.sleep(2.0)  # over three lease timeouts without a tick or a request
        stats = _daemon_stats(d.endpoint)
        assert (stats["engines"], stats["leases"]) == (1, 2)
        assert sent == ["hello", "put", "lookup"]  # the heartbeats did it
    finally:
        link.close()


def test_a_restarted_daemon_is_noticed_by_heartbeats_and_the_engine_registers_again(
        start_daemon) -> None:
    d = start_daemon(disk_bytes=0)
    sent: list[str] = []
    link = _link(d.endpoint, sent)
    try:
        d.stop()
        d2 = start_daemon(endpoint=d.endpoint, disk_bytes=0)
        assert wait_until(lambda: (pong := link.client.last_pong) is not None
                          and pong.epoch == d2.start_epoch and not pong.registered, LIMIT_S)
        link.tick(lambda: [])
        assert (link.connected, link.reconnects) == (True, 1)
        assert link.client.registration.epoch == d2.start_epoch
        assert sent == ["hello", "hello"]  # the link itself sent no PING
        assert _daemon_stats(d.endpoint)["engines"] == 1
    finally:
        link.close()


def test_a_link_to_an_absent_daemon_joins_it_when_heartbeats_get_an_answer(
        start_daemon, tmp_path: Path) -> None:
    endpoint = f"ipc://{tmp_path}/late.ipc"
    link = CacheLink(endpoint, "eng", "test-model", LAYOUT, 4, timeout_s=0.3)
    try:
        link.tick(lambda: [])  # nobody answers: the engine serves without the daemon
        assert (link.connected, link.client.answering, link.errors) == (False, False, 1)
        link.tick(lambda: [])  # no second HELLO (and wait) while the heartbeats miss
        assert link.errors == 1
        start_daemon(endpoint=endpoint, disk_bytes=0)
        assert wait_until(lambda: link.client.answering, LIMIT_S)
        link.tick(lambda: [])
        assert link.connected and _daemon_stats(endpoint)["engines"] == 1
    finally:
        link.close()


def test_the_engine_learns_the_remote_tier_and_its_load_without_asking_for_stats(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    plain = start_daemon(data_dir=tmp_path / "plain", disk_bytes=0)
    sent: list[str] = []
    link = _link(plain.endpoint, sent)
    try:
        assert (link.remote_tier, link.remote_load) == (False, None)
    finally:
        link.close()
    d = start_daemon(data_dir=tmp_path / "remote", **remote_flags(redis_cluster, unique_prefix()))
    link = _link(d.endpoint, sent)
    try:
        assert link.remote_tier  # from the HELLO reply
        # measured once the daemon reaches the cluster: the heartbeats' replies bring it
        assert wait_until(lambda: link.remote_load is not None, LIMIT_S)
        latency_s, bandwidth_bps = link.remote_load
        assert latency_s >= 0 and bandwidth_bps > 0
        assert "stats" not in sent and sent.count("hello") == 2
    finally:
        link.close()
