"""An engine and a real daemon: the engine registers its tenants' namespaces, and a purge
empties every tier of the tenant, the engine's own pool included (at its next heartbeat),
while outputs stay those of a no-cache run."""

from __future__ import annotations

import time

import pytest

from asymcache.cacheserver.blocks import tenant_digest, tenant_label
from asymcache.engine.client import CacheClient
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference

LEN, OUT, B = 100, 8, 16
FULL = (LEN // B) * B


@pytest.fixture(scope="module")
def prompt():
    llm = make_llm(reuse="none")
    ids = corpus_ids(llm, 1, LEN, offset=11)
    llm.close()
    return ids


def test_purge_empties_the_engines_pool_and_the_daemons_tiers_of_one_tenant(daemons,
                                                                           prompt) -> None:
    ref = reference(prompt, OUT)
    daemons.start(lease_timeout_s=1.5)  # heartbeats every 0.5 s
    a, b = greedy(OUT, cache_salt="salt-a"), greedy(OUT, cache_salt="salt-b")
    with make_llm(cache_endpoint=daemons.endpoint) as llm:
        assert_same(llm.generate(prompt, a), ref)
        assert_same(llm.generate(prompt, b), ref)
        warm = llm.generate(prompt, a)
        assert warm[0].stats.resident_tokens == FULL  # the check below can fail
        kv = llm.engine.kv
        book = {label for _, label in kv.tenancy.tenants.values()}
        assert book == {tenant_label("salt-a"), tenant_label("salt-b")}
        with CacheClient(daemons.endpoint, heartbeat=False) as c:
            got = c.purge(tenant_digest("salt-a"), "builtin")
        assert got.namespaces == 1 and got.removed["gpu"] == FULL // B, got
        assert got.removed["cpu"] == FULL // B  # written through
        deadline = time.monotonic() + 10
        while kv.link.client.purged_upto == 0 and time.monotonic() < deadline:
            llm.engine.tick_daemon()
            time.sleep(0.05)
        assert kv.link.client.purged_upto > 0, "no heartbeat named the purge"
        cold = llm.generate(prompt, a)
        assert_same(cold, ref)
        assert cold[0].stats.resident_tokens == 0 and cold[0].stats.fetched_tokens == 0
        other = llm.generate(prompt, b)
        assert_same(other, ref)
        assert other[0].stats.resident_tokens == FULL  # the other tenant kept everything
