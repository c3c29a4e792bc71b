"""CPU-tier slots across a daemon restart (real daemon processes, real shared memory): a slot
number handed out before the restart is never read from (or written into) the new daemon's
slab; the block is recomputed and the tokens equal a no-cache run."""

from __future__ import annotations

from asymcache.cacheserver.blocks import KVLayout
from asymcache.engine.client import CacheClient
from tests.engine.engine_fixtures import (
    BLOCK_BYTES,
    assert_same,
    corpus_ids,
    greedy,
    make_llm,
    reference,
)

LEN, OUT, B = 200, 8, 16
HALF = 6  # blocks 0-5 are in the CPU tier at LOOKUP time, blocks 6-11 only on disk


def _fill_cpu_tier(endpoint: str, layout: KVLayout, n: int) -> None:
    """Put ``n`` blocks of another model (bytes 0x5a) into the daemon's CPU tier, so that its
    slab holds other blocks where the old daemon's slots were."""
    from tests.cacheserver.daemon_fixtures import make_refs

    refs = make_refs(n, model="another-model")
    with CacheClient(endpoint, engine_id="filler", heartbeat=False) as c:
        c.hello("another-model", layout, gpu_slots=1)
        assert c.put(refs, [b"\x5a" * BLOCK_BYTES] * n).stored == [True] * n


def test_cpu_slots_from_before_a_daemon_restart_are_recomputed_not_read_from_the_new_slab(
    daemons,
) -> None:
    prompt = corpus_ids(make_llm(reuse="none"), 1, LEN, offset=7)[0]
    want = reference([prompt], OUT)
    daemons.start(disk_write_through="true")
    with make_llm(cache_endpoint=daemons.endpoint) as a:  # every block to CPU and disk
        assert_same(a.generate([prompt], greedy(OUT)), want)
    with CacheClient(daemons.endpoint, heartbeat=False) as c:
        c.flush()
    daemons.procs[-1].stop()
    daemons.start(disk_write_through="true")  # daemon A: blocks on disk only
    with make_llm(cache_endpoint=daemons.endpoint) as b:  # promotes blocks 0-5 into A's slab
        b.generate([prompt[:HALF * B + 1]], greedy(1))
    llm = make_llm(cache_endpoint=daemons.endpoint)
    link = llm.engine.kv.link
    client = link.client
    real_lookup, real_slot = link.lookup, client.cpu_slot
    seen: dict = {"reads": [], "handed_out": set(), "restarted": False}

    def lookup_then_restart(keys, remote=False, **options):
        found = real_lookup(keys, remote, **options)
        assert [f.where for f in found] == ["cpu"] * HALF + ["disk"] * HALF
        daemons.procs[-1].stop()  # A goes away while the engine holds its slot numbers ...
        daemons.start(disk_write_through="true")  # ... and B answers at the same endpoint
        _fill_cpu_tier(daemons.endpoint, llm.engine.kv.pool.layout, 2 * HALF)
        seen["restarted"] = True
        return found

    def handing_out(op, slots_of):
        def call(*args, **kw):
            reply = op(*args, **kw)  # PROMOTE reaches B: NOT_REGISTERED, re-HELLO, retried
            seen["handed_out"].update(s for s in slots_of(reply) if s >= 0)
            return reply
        return call

    def cpu_slot(slot, generation=None):
        if seen["restarted"]:
            seen["reads"].append((client.registration.cpu_shm_name, slot))
        return real_slot(slot, generation)

    link.lookup, client.cpu_slot = lookup_then_restart, cpu_slot
    client.promote_verified = handing_out(client.promote_verified, lambda r: r[0])
    client.reserve_cpu = handing_out(client.reserve_cpu, lambda r: r)
    link.take_reserved = handing_out(link.take_reserved, lambda r: [slot for _, slot in r])
    client.allocate = handing_out(client.allocate, lambda r: [v.demote_to for v in r])
    try:
        out = llm.generate([prompt], greedy(OUT))[0]
    finally:
        llm.close()
    new_slab = client.registration.cpu_shm_name
    touched = {slot for shm, slot in seen["reads"] if shm == new_slab}
    assert touched and touched <= seen["handed_out"]  # B's slab: only slots B gave this engine
    assert_same([out], want)
    assert (out.stats.recomputed_tokens, out.stats.fetched_tokens) == (HALF * B, HALF * B)
    assert link.stale_slots == HALF
