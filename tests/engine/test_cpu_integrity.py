"""CPU-tier integrity with a real daemon process: a block whose shared-memory bytes change after
its COMMIT (as a hostile or buggy engine mapping the tier could make them) is never served.

The test plays the hostile engine: it registers with the daemon, finds a committed block's CPU
slot with LOOKUP and flips a byte in the mapped slab. Outputs are compared with a no-cache run
(``engine_fixtures.reference``).
"""

from __future__ import annotations

import time

import pytest

from asymcache.cacheserver.blocks import block_keys
from asymcache.cacheserver.protocol import Where
from asymcache.engine.client import CacheClient
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference

N, LEN, OUT, B = 2, 200, 16, 16
FULL = (LEN // B) * B  # 192 tokens in full blocks
BAD = 5  # the block of prompt 1 that is tampered with


@pytest.fixture(scope="module")
def prompts():
    llm = make_llm(reuse="none")
    out = corpus_ids(llm, N, LEN, offset=11)
    llm.close()
    return out


@pytest.fixture(scope="module")
def ref(prompts):
    return reference(prompts, OUT)


def _tamper(endpoint: str, prompt: list[int]) -> bytes:
    """Flip one byte of block ``BAD`` of ``prompt`` in the CPU tier; its key."""
    llm = make_llm(reuse="none")
    kv = llm.engine.kv
    key = block_keys(kv.namespace(""), prompt, B)[BAD]
    with CacheClient(endpoint, engine_id="hostile", heartbeat=False) as c:
        c.hello(kv.fingerprint, kv.pool.layout, gpu_slots=1)
        found = c.lookup([key], lease=False)
        assert found.where == [Where.CPU] and found.checksums[0] != 0
        view = c.cpu_slot(found.slots[0])
        view[100] ^= 0xFF
    llm.close()
    return key


def _cpu_errors(endpoint: str) -> dict:
    with CacheClient(endpoint, heartbeat=False) as c:
        return c.stats()["tiers"]["cpu"]["errors"]


def _wait_for(fn, limit_s: float = 5.0):
    deadline = time.monotonic() + limit_s
    while not (got := fn()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return got


def test_a_tampered_cpu_block_is_recomputed_counted_and_replaced(daemons, prompts, ref) -> None:
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        assert_same(a.generate(prompts, greedy(OUT)), ref)
    _tamper(daemons.endpoint, prompts[1])
    with make_llm(cache_endpoint=daemons.endpoint) as b:  # a fresh pool: nothing resident
        outs = b.generate(prompts, greedy(OUT))
        assert b.engine.kv.link.corrupt == 1
    assert_same(outs, ref)
    assert outs[0].stats.fetched_tokens == FULL  # untampered blocks are still fetched
    assert 0 < outs[1].stats.fetched_tokens <= FULL - B
    assert outs[1].stats.recomputed_tokens + outs[1].stats.new_tokens >= B
    assert _wait_for(lambda: _cpu_errors(daemons.endpoint)) == {"checksum": 1}
    with make_llm(cache_endpoint=daemons.endpoint) as c:  # b wrote the recomputed block back
        again = c.generate(prompts[1:], greedy(OUT))
    assert_same(again, ref[1:])
    assert again[0].stats.fetched_tokens == FULL


def test_get_of_a_tampered_cpu_block_is_a_miss(daemons, prompts, ref) -> None:
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        assert_same(a.generate(prompts, greedy(OUT)), ref)
    key = _tamper(daemons.endpoint, prompts[1])
    ns = make_llm(reuse="none").engine.kv.namespace("")
    good = block_keys(ns, prompts[0], B)[BAD]
    with CacheClient(daemons.endpoint, heartbeat=False) as c:
        got = c.get([good, key])
    assert got[0] is not None and got[1] is None
    assert _cpu_errors(daemons.endpoint) == {"checksum": 1}
    with CacheClient(daemons.endpoint, heartbeat=False) as c:
        assert c.get([key]) == [None]  # forgotten: no longer in any tier
    assert _cpu_errors(daemons.endpoint) == {"checksum": 1}


def test_an_engine_that_cannot_map_the_tier_gets_no_tampered_block(daemons, prompts,
                                                                   ref) -> None:
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as a:
        assert_same(a.generate(prompts, greedy(OUT)), ref)
    _tamper(daemons.endpoint, prompts[1])
    with make_llm(cache_endpoint=daemons.endpoint) as b:
        b.engine.kv.link.mapped = False  # as on another host: GET, checked by the daemon
        outs = b.generate(prompts, greedy(OUT))
    assert_same(outs, ref)
    assert outs[0].stats.fetched_tokens == FULL
    assert outs[1].stats.fetched_tokens < FULL
    assert _cpu_errors(daemons.endpoint) == {"checksum": 1}
