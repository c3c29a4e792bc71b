"""COMMIT with ``lease``: the daemon leases what an engine commits, so ALLOCATE never names a block
a running request still uses (real daemon processes, replies on the wire), and the engine no
longer needs a LOOKUP after each COMMIT (so the daemon's GPU hits are real lookups only)."""

from __future__ import annotations

import time

import pytest

from asymcache.cacheserver.protocol import Commit, Where
from asymcache.engine.client import CacheClient
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
)
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference

LIMIT_S = 15.0  # liveness bound of waits, not a speed measurement
LEN, OUT, B = 200, 8, 16


def _client(endpoint: str, engine_id: str, gpu_slots: int = 4) -> CacheClient:
    c = CacheClient(endpoint, engine_id=engine_id, timeout_s=10, heartbeat=False)
    c.hello("test-model", LAYOUT, gpu_slots=gpu_slots)
    return c


def _victim_slots(c: CacheClient, n: int) -> list[int]:
    return sorted(v.gpu_slot for v in c.allocate(n))


def test_a_commit_without_lease_sends_no_lease_field() -> None:
    refs = make_refs(1)
    assert "lease" not in Commit(tier="gpu", blocks=refs, slots=[0]).header_fields()
    assert Commit(tier="gpu", blocks=refs, slots=[0], lease=True).header_fields()["lease"]


def test_blocks_committed_with_lease_are_never_victims_until_released(start_daemon) -> None:
    d = start_daemon(disk_bytes=0)
    refs = make_refs(4)
    with _client(d.endpoint, "eng") as c:
        assert c.commit(refs[:2], [0, 1], lease=True) == [True, True]
        assert c.commit(refs[2:], [2, 3]) == [True, True]  # as a client that predates lease
        assert c.stats()["leases"] == 2
        assert _victim_slots(c, 4) == [2, 3]
        assert _victim_slots(c, 4) == []  # the leased two are all that is left
        assert c.release([refs[0].key]) == 1
        assert _victim_slots(c, 4) == [0]
        assert _victim_slots(c, 4) == []
        assert c.release([refs[1].key]) == 1
        assert _victim_slots(c, 4) == [1]
        assert c.stats()["leases"] == 0
        assert c.stats()["tiers"]["gpu"]["hits"] == 0  # commits are no lookups


def test_commit_leases_end_with_the_engines_session(start_daemon) -> None:
    d = start_daemon(disk_bytes=0, lease_timeout_s=0.6)
    with _client(d.endpoint, "silent") as c, CacheClient(d.endpoint, heartbeat=False) as w:
        c.commit(make_refs(3), [0, 1, 2], lease=True)
        assert w.stats()["leases"] == 3
        deadline = time.monotonic() + LIMIT_S
        while (s := w.stats())["engines"] or s["leases"]:  # no heartbeat: the session expires
            assert time.monotonic() < deadline, s
            time.sleep(0.1)


def test_a_cpu_commit_with_lease_survives_cpu_pressure(start_daemon) -> None:
    d = start_daemon()  # 32 CPU slots, LRU, a disk tier below
    kept, plain = make_refs(2, start=90_000)
    with _client(d.endpoint, "eng") as c:
        slots = c.reserve_cpu([kept, plain])
        for ref, slot in zip((kept, plain), slots, strict=True):
            c.cpu_slot(slot)[:BLOCK_BYTES] = payload(ref)
        assert c.commit([kept], slots[:1], tier="cpu", lease=True) == [True]
        assert c.commit([plain], slots[1:], tier="cpu") == [True]
        others = make_refs(40)
        assert all(c.put(others, [payload(r) for r in others]).stored)
        c.flush()
        where = c.lookup([kept.key, plain.key], lease=False).where
        assert where == [Where.CPU, Where.DISK]


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    llm = make_llm(reuse="none")
    out = corpus_ids(llm, 2, LEN, offset=3)
    llm.close()
    return out


def test_an_engine_leases_what_its_running_requests_use_and_gpu_hits_are_real_lookups(
        daemons, prompts) -> None:
    daemons.start()
    ref = reference(prompts, OUT)
    with make_llm(cache_endpoint=daemons.endpoint) as llm, \
            CacheClient(daemons.endpoint, heartbeat=False) as watcher:
        assert_same(llm.generate(prompts[:1], greedy(OUT)), ref[:1])
        assert watcher.stats()["tiers"]["gpu"]["hits"] == 0  # a cold run looks nothing up twice
        assert watcher.stats()["leases"] == 0
        engine, req = llm.engine, llm.engine.add_request("b", prompts[1], greedy(OUT))
        for _ in range(100):  # until the prompt is computed and committed
            engine.step()
            if req.num_committed == LEN // B:
                break
        assert req.num_committed == LEN // B
        engine.kv.flush_commits(force=True)  # a running request's blocks may wait a few steps
        leases = watcher.stats()["leases"]
        assert leases == len(req.leased) == LEN // B  # every committed block, once
        named = {key for _, key, _ in engine.kv.link.victims(64)}
        assert named and not named & set(req.keys)  # only the finished request's blocks
        while engine.has_unfinished:
            engine.step()
        assert watcher.stats()["leases"] == 0
        again = llm.generate(prompts[1:], greedy(OUT))[0]
        assert again.token_ids == ref[1]
        assert again.stats.resident_tokens == LEN // B * B
        assert watcher.stats()["tiers"]["gpu"]["hits"] == LEN // B  # that one LOOKUP
