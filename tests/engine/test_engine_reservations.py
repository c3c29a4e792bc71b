"""CPU-tier reservations the engine cannot fill (real daemon process): an engine that cannot map
the tier asks ALLOCATE for no demotion slots, and reservations it could not fill are given back;
left FILLING, they would keep the tier full for the engine's lifetime (PUT would store nothing).
They are given back with CANCEL, which keeps the engine's session (its leases and slots)."""

from __future__ import annotations

from asymcache.engine.cache_link import CacheLink
from asymcache.engine.client import CacheClient
from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs, payload
from tests.engine.engine_fixtures import (
    BLOCK_BYTES,
    assert_same,
    corpus_ids,
    greedy,
    make_llm,
    reference,
)

LEN, OUT, SLOTS = 200, 8, 4


def test_an_unmapped_engine_gets_no_cpu_slots_reserved_for_its_demotions(daemons) -> None:
    prompts = corpus_ids(make_llm(reuse="none"), 3, LEN, offset=7)
    want = reference(prompts, OUT)
    daemons.start(cpu_bytes=f"{SLOTS * 32}KiB", disk_bytes=0)  # a CPU tier of 4 slots
    # 3 prompts x 13 blocks do not fit 30 slots: ALLOCATE names victims and reserves CPU slots
    llm = make_llm(cache_endpoint=daemons.endpoint, num_gpu_blocks=30, write_through=False)
    link = llm.engine.kv.link
    link.mapped = False  # as on another host
    try:
        assert_same(llm.generate(prompts, greedy(OUT)), want)
        llm.engine.tick_daemon()  # gives back what the last steps left unfilled
        with CacheClient(daemons.endpoint, engine_id="other", heartbeat=False) as c:
            stats = c.stats()
            assert stats["tiers"]["gpu"]["evictions"] > 0  # ALLOCATE did name victims
            assert stats["tiers"]["gpu"]["demotions"] == 0  # but reserved no CPU slot for them
            c.hello("another-model", llm.engine.kv.pool.layout, gpu_slots=1)
            refs = make_refs(SLOTS, model="another-model")
            assert c.put(refs, [b"\x5a" * BLOCK_BYTES] * SLOTS).stored == [True] * SLOTS
        assert link.given_back == 0 and link.owed == 0
    finally:
        llm.close()


def test_reservations_of_victims_whose_slot_changed_are_cancelled_in_the_same_session(
        daemons) -> None:
    daemons.start(cpu_bytes=f"{SLOTS * 32}KiB", disk_bytes=0)
    refs = make_refs(SLOTS)
    held = [(ref, slot) for slot, ref in enumerate(refs)]
    link = CacheLink(daemons.endpoint, "eng", "test-model", LAYOUT, SLOTS, timeout_s=5)
    try:
        link.tick(lambda: held)
        generation, epoch = link.client.generation, link.client.registration.epoch
        victims = link.victims(SLOTS)
        assert sorted(d for _, _, d in victims) == list(range(SLOTS))  # the whole CPU tier
        link.abandon([(key, d) for _, key, d in victims])  # their slots hold other blocks now
        assert link.owed == SLOTS
        link.tick(lambda: [])
        assert (link.given_back, link.owed) == (SLOTS, 0)
        assert link.client.generation == generation  # no re-HELLO: the same session
        assert link.client.cancel([key for _, key, _ in victims]) == 0  # nothing left
        assert link.client.registration.epoch == epoch
        with CacheClient(daemons.endpoint, engine_id="other", heartbeat=False) as c:
            c.hello("test-model", LAYOUT, gpu_slots=1)
            assert c.put(refs, [payload(r) for r in refs]).stored == [True] * SLOTS
    finally:
        link.close()
