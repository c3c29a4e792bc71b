"""LOOKUP skipped by the engine's mirror of its host (real daemon process with KV events, real
CPU tier): a prompt the host never saw sends no LOOKUP, a prefix another engine wrote through
is looked up and fetched, and the mirror falls back to "maybe" (the LOOKUP goes out) past its
bound, after a gap the replay cannot fill and after a daemon restart. Outputs always equal a
no-cache run."""

from __future__ import annotations

import time
from typing import Any

from asymcache.cacheserver.blocks import block_keys
from asymcache.cacheserver.protocol import BlockRef
from asymcache.engine.client import CacheClient
from asymcache.engine.kv_events import EventSubscriber
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference
from tests.engine.test_step_round_trips import CallLog

LEN, OUT = 200, 4


def _start(daemons: Any, **flags: object) -> dict[str, str]:
    """A daemon with KV events; the engine options that turn the mirror on."""
    ev, rp = f"ipc://{daemons.ipc_dir}/ev.ipc", f"ipc://{daemons.ipc_dir}/rp.ipc"
    daemons.start(events_endpoint=ev, events_replay_endpoint=rp, **flags)
    return {"cache_endpoint": daemons.endpoint, "events_endpoint": ev,
            "events_replay_endpoint": rp}


def _lookups(llm: Any, prompts: list[list[int]]) -> tuple[list[Any], int]:
    """Outputs of ``prompts`` and the LOOKUPs the engine sent meanwhile."""
    link = llm.engine.kv.link
    log = CallLog(link.client)
    link.client = log
    try:
        outs = llm.generate(prompts, greedy(OUT))
    finally:
        link.client = log._client
    return outs, sum(1 for _, op, _ in log.calls if op == "lookup")


def _until(what: str, check: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _authoritative(llm: Any) -> bool:
    link = llm.engine.kv.link
    link.mirror.drain()
    return link.mirror.authoritative(link.daemon_epoch)


def _keys(llm: Any, ids: list[int]) -> list[bytes]:
    return block_keys(llm.engine.kv.namespace(""), ids, llm.engine.kv.block_size)


def test_a_prompt_the_host_never_saw_sends_no_lookup_and_matches_no_cache(daemons) -> None:
    warm, fresh = corpus_ids(make_llm(reuse="none"), 2, LEN, offset=3)
    want = reference([fresh], OUT)
    with make_llm(**_start(daemons)) as llm:
        llm.generate([warm], greedy(OUT))  # its events prove the subscription works
        _until("the mirror to follow the daemon", lambda: _authoritative(llm))
        skipped = llm.engine.kv.link.lookups_skipped
        outs, lookups = _lookups(llm, [fresh])
        assert_same(outs, want)
        assert lookups == 0 and llm.engine.kv.link.lookups_skipped == skipped + 1
        assert outs[0].stats.fetched_tokens == 0


def test_a_prefix_another_engine_wrote_through_is_looked_up_and_fetched(daemons) -> None:
    first, other = corpus_ids(make_llm(reuse="none"), 2, LEN, offset=5)
    second = first[:160] + other[:40]  # shares 10 blocks with ``first``
    want = reference([second], OUT)
    options = _start(daemons)
    with make_llm(**options) as writer, make_llm(**options) as reader:
        writer.generate([first], greedy(OUT))  # committed and written through to the CPU tier
        mirror, link = reader.engine.kv.link.mirror, reader.engine.kv.link
        keys = _keys(reader, first)
        _until("the reader's mirror to see the writer's blocks", lambda: _authoritative(reader)
               and mirror.may_hold(reader.engine.kv.namespace(""), keys, link.daemon_epoch))
        outs, lookups = _lookups(reader, [second])
        assert_same(outs, want)
        assert lookups == 1 and link.lookups_skipped == 0
        assert outs[0].stats.fetched_tokens >= 10 * reader.engine.kv.block_size


def test_past_its_bound_every_lookup_goes_out(daemons) -> None:
    warm, fresh = corpus_ids(make_llm(reuse="none"), 2, LEN, offset=7)
    want = reference([fresh], OUT)
    with make_llm(**_start(daemons), lookup_mirror_blocks=4) as llm:
        llm.generate([warm], greedy(OUT))  # 12 blocks written through: more than 4
        mirror = llm.engine.kv.link.mirror
        _until("the mirror to follow the daemon", lambda: mirror.drain() or mirror.sub.complete)
        _until("the written-through blocks' events", lambda: mirror.drain() or mirror.overflowed)
        outs, lookups = _lookups(llm, [fresh])
        assert_same(outs, want)
        assert lookups == 1 and llm.engine.kv.link.lookups_skipped == 0


def test_after_a_gap_the_replay_cannot_fill_every_lookup_goes_out(daemons) -> None:
    warm, fresh = corpus_ids(make_llm(reuse="none"), 2, LEN, offset=9)
    want = reference([fresh], OUT)
    options = _start(daemons, events_replay_bytes=12 << 10)
    with make_llm(**options) as llm:
        llm.generate([warm], greedy(OUT))
        _until("the mirror to follow the daemon", lambda: _authoritative(llm))
        kv, sub = llm.engine.kv, llm.engine.kv.link.mirror.sub
        with CacheClient(daemons.endpoint, engine_id="writer", heartbeat=False) as writer:
            writer.hello(kv.fingerprint, kv.pool.layout, gpu_slots=4)
            _put(writer, kv, 0)
            lost = _lose(sub)
            probe = EventSubscriber(options["events_endpoint"], options["events_replay_endpoint"],
                                    replay_at_start=False)
            try:
                for start in range(1, 200):  # until the daemon no longer keeps the lost batches
                    _put(writer, kv, start)
                    if probe.replay(0)[0].seq > lost:
                        break
                else:
                    raise AssertionError("the replay buffer kept the lost batches")
            finally:
                probe.close()
        outs, lookups = _lookups(llm, [fresh])
        assert_same(outs, want)
        assert lookups == 1 and llm.engine.kv.link.lookups_skipped == 0
        assert sub.gap and not sub.complete


def _put(client: CacheClient, kv: Any, start: int) -> None:
    """PUT a chain of 8 blocks in the engine's namespace (tokens no prompt has)."""
    ns, bs = kv.namespace(""), kv.block_size
    tokens = [(100_000 + start * 8 * bs + i) % 30_000 for i in range(8 * bs)]
    keys = block_keys(ns, tokens, bs)
    refs = [BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]
    client.put(refs, [bytes([start % 251]) * kv.pool.bytes_per_block] * len(refs))


def _lose(sub: EventSubscriber) -> int:
    """Read and drop the live batches waiting (as if the network lost them); the last seq."""
    _until("the PUT's events", sub.waiting)
    last = -1
    while sub.waiting():
        _, seq, _ = sub.sub.recv_multipart()
        last = int.from_bytes(seq, "big")
    return last


def test_after_a_daemon_restart_lookups_go_out_until_the_mirror_follows(daemons) -> None:
    warm, fresh, late = corpus_ids(make_llm(reuse="none"), 3, LEN, offset=13)
    want = reference([warm, fresh, late], OUT)
    options = _start(daemons)
    with make_llm(**options) as llm:
        llm.generate([warm], greedy(OUT))
        _until("the mirror to follow the daemon", lambda: _authoritative(llm))
        link = llm.engine.kv.link
        before = link.daemon_epoch
        daemons.procs[-1].stop()
        _start(daemons)
        _until("the engine to register again", lambda: link.tick(llm.engine.kv.held)
               or (link.connected and link.daemon_epoch not in (None, before)))
        outs, lookups = _lookups(llm, [warm])  # in the pool: the LOOKUP goes out (leases)
        assert lookups == 1
        assert_same(outs, want[:1])
        _until("the mirror to follow the new daemon", lambda: _authoritative(llm))
        outs, lookups = _lookups(llm, [fresh])  # the new daemon never saw it
        assert_same(outs, want[1:2])
        assert lookups == 0
