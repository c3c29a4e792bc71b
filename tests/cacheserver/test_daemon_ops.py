"""Every op against a real daemon process: exact replies on the wire."""

from __future__ import annotations

import time

import pytest

from asymcache.cacheserver.protocol import PROTOCOL_VERSION, Where
from asymcache.engine.client import CacheClient, NotRegisteredError
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
)

MISS, GPU, CPU, DISK = Where.MISS, Where.GPU, Where.CPU, Where.DISK


@pytest.fixture
def client(start_daemon):
    d = start_daemon()
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        yield c


def test_ping_answers_without_hello_and_ops_need_hello(client: CacheClient) -> None:
    pong = client.ping()
    assert pong.version == PROTOCOL_VERSION and not pong.registered
    with pytest.raises(NotRegisteredError):
        client.lookup([make_refs(1)[0].key])


def test_hello_reports_cpu_tier_geometry(client: CacheClient) -> None:
    reg = client.hello("test-model", LAYOUT, gpu_slots=4)
    assert (reg.cpu_slot_bytes, reg.cpu_num_slots, reg.restored) == (8192, 32, 0)
    assert client.ping().registered


def test_commit_lookup_release_on_gpu(client: CacheClient) -> None:
    refs = make_refs(3)
    keys = [r.key for r in refs]
    client.hello("test-model", LAYOUT, gpu_slots=4)
    assert client.lookup(keys).where == [MISS] * 3
    assert client.commit(refs[:2], [2, 0]) == [True, True]
    found = client.lookup(keys)
    assert (found.where, found.slots) == ([GPU, GPU, MISS], [2, 0, -1])
    assert client.release(keys) == 2  # the third key held no lease
    assert client.release(keys) == 0


def test_allocate_names_unleased_victims_and_cpu_slots_to_demote_to(client: CacheClient) -> None:
    refs = make_refs(4)
    keys = [r.key for r in refs]
    client.hello("test-model", LAYOUT, gpu_slots=4)
    client.commit(refs, [0, 1, 2, 3])
    client.lookup(keys[:2])  # leases blocks 0 and 1: never victims
    victims = client.allocate(2)
    assert sorted(v.gpu_slot for v in victims) == [2, 3]
    assert {v.key for v in victims} == set(keys[2:])
    assert all(v.demote_to >= 0 for v in victims)
    # reserved CPU slots are not readable before COMMIT
    assert client.lookup(keys[2:], lease=False).where == [MISS, MISS]
    for v in victims:
        client.cpu_slot(v.demote_to)[:BLOCK_BYTES] = payload(refs[keys.index(v.key)])
    assert client.commit(refs[2:], [v.demote_to for v in sorted(victims, key=lambda v:
                                                                 keys.index(v.key))],
                         tier="cpu") == [True, True]
    found = client.lookup(keys, lease=False)
    assert found.where == [GPU, GPU, CPU, CPU]
    assert [bytes(g) for g in client.get(keys[2:])] == [payload(r) for r in refs[2:]]
    assert client.allocate(2) == []  # what is left on the GPU is leased


def test_cpu_blocks_evicted_for_victims_reach_disk_before_the_next_request(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB")  # two CPU slots, both taken by PUTs
    held, gpu = make_refs(2), make_refs(2, start=500)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        assert c.put(held, [payload(r) for r in held]).stored == [True, True]
        assert c.commit(gpu, [0, 1]) == [True, True]
        victims = c.allocate(2)  # their CPU slots are made by evicting the two held blocks,
        assert all(v.demote_to >= 0 for v in victims)  # whose disk copies follow the reply
        for v in victims:  # the engine refills the slots at once
            r = gpu[[g.key for g in gpu].index(v.key)]
            c.cpu_slot(v.demote_to)[:BLOCK_BYTES] = payload(r)
        assert c.commit([gpu[[g.key for g in gpu].index(v.key)] for v in victims],
                        [v.demote_to for v in victims], tier="cpu") == [True, True]
        # the next request finds the evicted blocks on disk, with their own bytes
        assert c.lookup([r.key for r in held], lease=False).where == [DISK, DISK]
        assert [bytes(g) for g in c.get([r.key for r in held])] == [payload(r) for r in held]
        assert c.stats()["tiers"]["cpu"]["demotions"] == 2


def test_commit_to_an_unreserved_cpu_slot_is_refused(client: CacheClient) -> None:
    refs = make_refs(1)
    client.hello("test-model", LAYOUT, gpu_slots=2)
    assert client.commit(refs, [5], tier="cpu") == [False]
    slots = client.reserve_cpu(refs)
    assert slots[0] >= 0 and client.reserve_cpu(refs) == [-2]
    assert client.commit(refs, [slots[0] + 1], tier="cpu") == [False]
    assert client.commit(refs, slots, tier="cpu") == [True]


def test_put_get_flush_and_durable_put(client: CacheClient) -> None:
    refs = make_refs(3)
    keys = [r.key for r in refs]
    client.hello("test-model", LAYOUT, gpu_slots=2)
    put = client.put(refs, [payload(r) for r in refs], durable=True)
    assert (put.stored, put.durable) == ([True] * 3, True)
    got = client.get([*keys, make_refs(1, salt="x")[0].key])
    assert [bytes(g) for g in got[:3]] == [payload(r) for r in refs] and got[3] is None
    assert client.flush() == 3
    assert client.lookup(keys, lease=False).where == [CPU] * 3


def test_put_with_a_wrong_payload_size_is_refused_with_bad_field(client: CacheClient) -> None:
    client.hello("test-model", LAYOUT, gpu_slots=2)
    with pytest.raises(Exception, match=r"bad_field.*payload 0 is 10 bytes"):
        client.put(make_refs(1), [b"x" * 10])


def test_promote_brings_disk_blocks_to_cpu(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB")  # two CPU slots: the third PUT demotes to disk
    refs = make_refs(3)
    keys = [r.key for r in refs]
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        for r in refs:
            c.put([r], [payload(r)])
        c.flush()
        where = c.lookup(keys, lease=False).where
        assert where.count(CPU) == 2 and where.count(DISK) == 1
        on_disk = keys[where.index(DISK)]
        slot = c.promote([on_disk])[0]
        assert slot >= 0
        assert bytes(c.cpu_slot(slot)[:BLOCK_BYTES]) == payload(refs[keys.index(on_disk)])
        assert c.lookup([on_disk], lease=False).where == [CPU]
        assert c.promote([make_refs(1, salt="none")[0].key]) == [-1]


def test_pin_keeps_blocks_resident_and_unpin_lets_them_go(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB", disk_bytes=0)
    refs = make_refs(4)
    keys = [r.key for r in refs]
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        c.put(refs[:2], [payload(r) for r in refs[:2]])
        assert c.pin(keys[:2], ttl_s=60) == 2
        assert c.put(refs[2:3], [payload(refs[2])]).stored == [False]  # all CPU slots pinned
        assert c.unpin(keys[:1]) == 1
        assert c.put(refs[2:3], [payload(refs[2])]).stored == [True]
        assert c.lookup(keys, lease=False).where == [MISS, CPU, CPU, MISS]


def test_stats_reports_tiers_and_counters(client: CacheClient) -> None:
    refs = make_refs(2)
    client.hello("test-model", LAYOUT, gpu_slots=3)
    client.commit(refs, [0, 1])
    client.lookup([r.key for r in refs] + [make_refs(1, salt="s")[0].key])
    stats = client.stats()
    assert stats["engines"] == 1 and stats["index_blocks"] == 2 and stats["leases"] == 2
    assert stats["tiers"]["gpu"] | {"errors": {}} == {
        "blocks": 2, "capacity_blocks": 3, "hits": 2, "misses": 1, "evictions": 0,
        "demotions": 0, "errors": {}}
    assert stats["tiers"]["cpu"]["capacity_blocks"] == 32


def test_default_policy_asym_with_cost_preset_serves_and_evicts(start_daemon) -> None:
    from asymcache.cacheserver.config import ServerConfig

    cfg = ServerConfig()
    # blocks of one CPU slot: a tier's capacity_blocks is then exactly what it can hold
    d = start_daemon(policy=cfg.policy, cost_preset=cfg.cost_preset, cpu_bytes="16KiB",
                     cpu_slot_bytes="4KiB", disk_bytes="64KiB")
    refs = make_refs(30)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=4)
        for i in range(0, 30, 5):
            c.put(refs[i:i + 5], [payload(r) for r in refs[i:i + 5]])
            c.commit(refs[i:i + 4], [0, 1, 2, 3])
            assert len(c.allocate(2)) == 2
        stats = c.stats()
        assert stats["config"]["policy"] == "asym"
        tiers = stats["tiers"]
        assert all(tiers[t]["blocks"] <= tiers[t]["capacity_blocks"] for t in tiers)
        assert tiers["cpu"]["evictions"] > 0
        got = c.get([r.key for r in refs])
        assert all(bytes(g) == payload(r) for g, r in zip(got, refs, strict=True) if g)


def test_engines_past_max_engines_get_a_capacity_error(start_daemon) -> None:
    d = start_daemon(max_engines=1, disk_bytes=0)
    with CacheClient(d.endpoint, engine_id="one", timeout_s=10, heartbeat=False) as a, \
            CacheClient(d.endpoint, engine_id="two", timeout_s=10, heartbeat=False) as b:
        a.hello("test-model", LAYOUT, gpu_slots=2)
        with pytest.raises(Exception, match=r"capacity.*max_engines"):
            b.hello("test-model", LAYOUT, gpu_slots=2)
        a.hello("test-model", LAYOUT, gpu_slots=2)  # a re-HELLO replaces its own session
        assert a.stats()["engines"] == 1


def test_a_ttl_pin_lapses_by_itself(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB", disk_bytes=0)
    refs = make_refs(3)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        c.put(refs[:2], [payload(r) for r in refs[:2]])
        assert c.pin([r.key for r in refs[:2]], ttl_s=0.3) == 2
        assert c.put(refs[2:], [payload(refs[2])]).stored == [False]  # both slots pinned
        time.sleep(0.5)
        assert c.put(refs[2:], [payload(refs[2])]).stored == [True]


def test_write_through_puts_committed_cpu_blocks_on_disk(start_daemon) -> None:
    d = start_daemon(disk_write_through="true")
    refs = make_refs(2)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        slots = c.reserve_cpu(refs)
        for r, s in zip(refs, slots, strict=True):
            c.cpu_slot(s)[:BLOCK_BYTES] = payload(r)
        assert c.commit(refs, slots, tier="cpu") == [True, True]
        assert c.flush() == 2
