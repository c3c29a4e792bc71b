"""How the disk tier writes: plain writes or a writable map on the same files, deletes that
wait for a write to share its commit but land on their own too, eviction in a full tier."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import pytest

from asymcache.tiers.codec import value_bytes
from asymcache.tiers.disk import DiskTier
from tests.tiers.conftest import block, held_write_lock, run_child

BLOCK = 64 * 1024


@pytest.mark.parametrize("first, second", [(True, False), (False, True)])
def test_blocks_written_with_one_write_mode_read_back_in_the_other(
        db_path: str, first: bool, second: bool) -> None:
    items = [block(i, BLOCK + 3 * i) for i in range(6)]
    tier = DiskTier(db_path, capacity_bytes=4 << 20, writemap=first)
    assert tier.writemap is first
    assert tier.put(items, durable=True) == [True] * 6
    tier.close()
    tier = DiskTier(db_path, capacity_bytes=4 << 20, writemap=second)
    try:
        assert tier.writemap is second
        assert tier.get([key for key, _, _ in items]) == [p for _, _, p in items]
        more = [block(i, BLOCK) for i in range(6, 9)]
        assert tier.put(more, durable=True) == [True] * 3
        assert dict(tier.headers()) == {key: h for key, h, _ in items + more}
    finally:
        tier.close()


def test_a_delete_alone_is_committed_without_flush_and_survives_sigkill(db_path: str) -> None:
    child = run_child(f"""
        import time
        from tests.tiers.conftest import block
        from asymcache.tiers.disk import DiskTier
        tier = DiskTier({db_path!r}, capacity_bytes=4 << 20)
        assert tier.put([block(i, {BLOCK}) for i in range(3)], durable=True) == [True] * 3
        assert tier.delete([block(1)[0]]) == 1
        for _ in range(1000):  # the lazy delete lands on its own within a fraction of a second
            if tier.pending_ops == 0:
                break
            time.sleep(0.01)
        print("idle" if tier.pending_ops == 0 else "still queued", flush=True)
        time.sleep(60)
    """)
    assert child.stdout.readline().strip() == "idle"
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    tier = DiskTier(db_path, capacity_bytes=4 << 20)
    try:
        kept = [block(0, BLOCK), block(2, BLOCK)]
        assert dict(tier.headers()) == {key: header for key, header, _ in kept}
        assert tier.get([block(1)[0]]) == [None] and len(tier) == 2
    finally:
        tier.close()


def test_a_full_tier_that_evicts_before_each_durable_put_keeps_its_size(db_path: str) -> None:
    # The daemon's steady state: room is made by deleting the oldest blocks, then the new ones
    # are put durably. 8 MiB go through a 4 MiB map: LMDB must reuse the pages it freed.
    per_round, rounds = 8, 16
    tier = DiskTier(db_path, capacity_bytes=3 * per_round * (BLOCK + 8192), map_bytes=4 << 20)
    try:
        for r in range(rounds):
            items = [block(r * per_round + i, BLOCK) for i in range(per_round)]
            if r >= 3:
                old = [block((r - 3) * per_round + i)[0] for i in range(per_round)]
                assert tier.delete(old) == per_round
            assert tier.put(items, durable=True) == [True] * per_round
        assert len(tier) == 3 * per_round and tier.error_counts() == {}
        last = [block((rounds - 1) * per_round + i, BLOCK) for i in range(per_round)]
        assert tier.get([key for key, _, _ in last]) == [p for _, _, p in last]
    finally:
        tier.close()


def test_the_rebuild_scan_lists_every_block_once_across_chunks(db_path: str) -> None:
    n = 2 * 4096 + 5  # the scan reads 4096 entries per read transaction
    items = [block(i, 16) for i in range(n)]
    tier = DiskTier(db_path, capacity_bytes=64 << 20)
    assert tier.put(items, durable=True) == [True] * n
    tier.close()
    tier = DiskTier(db_path, capacity_bytes=64 << 20)
    try:
        assert len(tier) == n
        listed = list(tier.headers())
        assert len(listed) == n and dict(listed) == {key: h for key, h, _ in items}
    finally:
        tier.close()


def _bounded(fn: Callable[[], object], timeout_s: float) -> tuple[threading.Thread, list]:
    """Run ``fn`` in a thread for at most ``timeout_s``: (the thread, [its result] or [])."""
    out: list = []
    thread = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    thread.start()
    thread.join(timeout_s)
    return thread, out


def test_a_full_write_queue_refuses_a_plain_put_at_once_and_counts_it(db_path: str) -> None:
    items = [block(i, BLOCK) for i in range(5)]
    value = value_bytes(items[0][1])
    tier = DiskTier(db_path, capacity_bytes=4 << 20, queue_bytes=3 * value)
    try:
        with held_write_lock(db_path) as release:  # the writer stalls: writes stay queued
            thread, out = _bounded(lambda: [tier.put([it])[0] for it in items[:4]], 10.0)
            assert not thread.is_alive(), "a plain put blocked on the full write queue"
            assert out == [[True, True, True, False]]
            assert tier.error_counts() == {"queue_full": 1}
            assert len(tier) == 3 and tier.used_bytes == 3 * tier.entry_bytes(items[0][1])
            assert tier.get([items[3][0]]) == [None]  # refused: not held, not half-accounted
            assert tier.get([items[0][0]]) == [items[0][2]]  # queued blocks are served
            # a durable put (off any event loop) waits for room, then for its commit
            thread, out = _bounded(lambda: tier.put([items[4]], durable=True), 0.5)
            assert thread.is_alive() and out == []
            release()
            thread.join(30)
        assert out == [[True]]
        tier.flush()
        held = [items[i] for i in (0, 1, 2, 4)]
        assert tier.get([k for k, _, _ in held]) == [p for _, _, p in held]
    finally:
        tier.close()
