"""Faults inside the daemon never stop it serving: a stalled disk writer, a failing request in
a batch, a failing housekeeping step; /readyz tells a slow start-up from a live daemon."""

from __future__ import annotations

from asymcache.cacheserver.startup import DISK_DIRNAME
from asymcache.tiers.base import BlockHeader
from asymcache.tiers.codec import value_bytes
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
    registered_client,
)
from tests.tiers.conftest import held_write_lock


def test_a_full_disk_write_queue_refuses_demotions_and_the_daemon_keeps_answering(
        start_daemon, tmp_path) -> None:
    value = value_bytes(BlockHeader(bytes(16), bytes(16), 0, LAYOUT.canonical(), BLOCK_BYTES, 0))
    # 2 CPU slots; the disk's write queue holds two blocks' values
    d = start_daemon(cpu_bytes="16KiB", disk_queue_bytes=2 * value + value // 2)
    refs = make_refs(12)
    with held_write_lock(str(tmp_path / "data" / DISK_DIRNAME)), registered_client(d.endpoint) as c:
        # every PUT past the second evicts a CPU block; the stalled writer keeps the first two
        # demotions queued, so the queue refuses the other eight instead of blocking the loop
        assert [c.put([r], [payload(r)]).stored for r in refs] == [[True]] * 12
        disk = c.stats()["tiers"]["disk"]
        assert disk["errors"] == {"queue_full": 8} and disk["blocks"] == 2
        assert c.ping().registered
    with registered_client(d.endpoint) as c:
        assert c.flush() == 2
        got = [None if g is None else bytes(g) for g in c.get([r.key for r in refs])]
    kept = {0, 1, 10, 11}  # demoted to disk before the queue filled; still in the CPU tier
    assert got == [payload(r) if i in kept else None for i, r in enumerate(refs)]
