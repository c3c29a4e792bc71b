"""Two hosts sharing KV through the remote tier: two daemon processes (own CPU tier and data
directory each) on one real Redis Cluster (three masters on loopback). An engine on host A
computes the prompts; an engine on host B finds their blocks as REMOTE, has its daemon PROMOTE
them and reuses them, with greedy tokens equal to a no-cache run (margins asserted there)."""

from __future__ import annotations

from pathlib import Path

from asymcache.engine.client import CacheClient
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from tests.daemons import ENGINE
from tests.engine.engine_fixtures import (
    BLOCK_BYTES,
    assert_same,
    corpus_ids,
    greedy,
    make_llm,
    reference,
)
from tests.redis_cluster import unique_prefix, wait_until

N, LEN, OUT, B = 2, 200, 12, 16
FULL = (LEN // B) * B  # 192 tokens in full blocks; the 8 after them are always new


def _host(start, cluster: LocalRedisCluster, prefix: str, data_dir: Path) -> str:
    """A daemon sharing through ``cluster``; returns its endpoint once the cluster answers."""
    d = start(data_dir=data_dir, **ENGINE, remote_nodes=",".join(cluster.nodes),
              remote_prefix=prefix, remote_timeout_s=1.0)
    with CacheClient(d.endpoint, heartbeat=False) as c:
        assert wait_until(lambda: c.stats()["tiers"]["remote"]["ready"], 20.0), c.stats()
    return d.endpoint


def test_an_engine_on_host_b_reuses_blocks_an_engine_on_host_a_computed(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    prefix = unique_prefix()
    host_a = _host(start_daemon, redis_cluster, prefix, tmp_path / "a")
    host_b = _host(start_daemon, redis_cluster, prefix, tmp_path / "b")
    with make_llm(reuse="none") as plain:
        prompts = corpus_ids(plain, N, LEN, offset=11)
    ref = reference(prompts, OUT)
    with make_llm(cache_endpoint=host_a) as a:
        computed = a.generate(prompts, greedy(OUT))
    assert_same(computed, ref)
    assert [o.stats.new_tokens for o in computed] == [LEN] * N
    with CacheClient(host_a, heartbeat=False) as c:
        c.flush()  # host A's shared copies are in the cluster
    with make_llm(cache_endpoint=host_b) as b:
        assert b.engine.kv.link.remote_tier
        reused = b.generate(prompts, greedy(OUT))
    assert_same(reused, ref)
    assert [o.stats.fetched_tokens for o in reused] == [FULL] * N
    assert [o.stats.new_tokens for o in reused] == [LEN - FULL] * N
    assert [o.stats.bytes_fetched for o in reused] == [FULL // B * BLOCK_BYTES] * N
    with CacheClient(host_b, heartbeat=False) as c:
        remote = c.stats()["tiers"]["remote"]
    assert remote["hits"] == N * (FULL // B)  # every block was found in the cluster
    assert remote["errors"] == {}
