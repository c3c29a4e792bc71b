"""engine/kv_events.py's subscriber against a real daemon: replay and live overlap without
duplicates, and a restarted daemon is followed from its first batch."""

from __future__ import annotations

import time

from asymcache.engine.kv_events import EventSubscriber
from asymcache.ops.kv_events import HostIndex
from tests.cacheserver.daemon_fixtures import make_refs, payload, registered_client


def _collect(sub: EventSubscriber, index: HostIndex, seconds: float = 1.0) -> list[int]:
    seqs = []
    for batch in sub.batches(seconds):
        seqs.append(batch.seq)
        for event in batch.events:
            index.apply(event)
    return seqs


def test_overlapping_replay_and_live_batches_are_delivered_once(start_daemon, tmp_path):
    ev, rp = f"ipc://{tmp_path}/ev.ipc", f"ipc://{tmp_path}/rp.ipc"
    d = start_daemon(events_endpoint=ev, events_replay_endpoint=rp)
    sub = EventSubscriber(ev, rp)
    time.sleep(0.3)  # subscribed: what follows arrives live as well
    c = registered_client(d.endpoint)
    refs = make_refs(3)
    for ref in refs:
        c.put([ref], [payload(ref)])
    index = HostIndex()
    delivered = [b.seq for b in sub.catch_up()]  # by replay, while the same wait live
    for seq in delivered:
        assert seq >= 0
    delivered += _collect(sub, HostIndex())
    assert sorted(delivered) == delivered and len(set(delivered)) == len(delivered)
    assert sub.restarts == 0
    index = HostIndex()
    late = EventSubscriber(ev, rp)
    for batch in late.catch_up():
        for event in batch.events:
            index.apply(event)
    late.close()
    assert set(index.places) == {r.key for r in refs}
    c.close()
    sub.close()


def test_a_restarted_daemon_is_followed_from_its_first_batch(start_daemon, tmp_path):
    ev, rp = f"ipc://{tmp_path}/ev.ipc", f"ipc://{tmp_path}/rp.ipc"
    flags = {"events_endpoint": ev, "events_replay_endpoint": rp}
    d = start_daemon(**flags)
    c = registered_client(d.endpoint)
    before = make_refs(2, salt="before")
    c.put(before, [payload(r) for r in before])  # CPU only: gone with the daemon
    c.close()
    sub = EventSubscriber(ev, rp)
    index = HostIndex()
    _collect(sub, index, 0.5)
    assert set(index.places) == {r.key for r in before}
    d.stop()
    d2 = start_daemon(**flags)
    c = registered_client(d2.endpoint)
    after = []
    for i in range(20):  # until the subscriber has reconnected and met the new daemon
        refs = make_refs(1, salt=f"after{i}")
        c.put(refs, [payload(r) for r in refs])
        after += refs
        _collect(sub, index, 0.5)
        if sub.restarts:
            break
    assert sub.restarts == 1
    assert set(index.places) == {r.key for r in after}  # AllBlocksCleared, then the new blocks
    c.close()
    sub.close()
