"""The LOOKUP mirror's bookkeeping (``engine/lookup_mirror.py``), fed batches by hand through a
stand-in subscriber: what it answers for CPU and disk blocks stored and removed, after
AllBlocksCleared, in another epoch, past its bound, and while its subscriber is incomplete."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from asymcache.engine.kv_events import Batch
from asymcache.engine.lookup_mirror import LookupMirror

NS = b"n" * 16
EPOCH = 7
A, B, C, D = (bytes([i]) * 16 for i in range(1, 5))


class Feed:
    """Stands in for an ``EventSubscriber``: delivers the batches queued with :meth:`send`."""

    def __init__(self) -> None:
        self.queued: list[Batch] = []
        self.complete, self.gap, self.epoch = True, False, EPOCH
        self.resyncs = 0
        self.seq = 0

    def send(self, *events: dict[str, Any], epoch: int = EPOCH) -> None:
        self.queued.append(Batch(b"kv/x", self.seq, 0.0, list(events), self.seq - 1, epoch))
        self.seq += 1
        self.epoch = epoch

    def batches(self, seconds: float, max_after: int = 10_000) -> Iterator[Batch]:
        ready, self.queued = self.queued[:max_after], self.queued[max_after:]
        yield from ready

    def waiting(self) -> bool:
        return bool(self.queued)

    def resync(self) -> None:
        self.resyncs += 1

    def close(self) -> None:
        pass


def stored(*keys: bytes, medium: str = "CPU", **extra: Any) -> dict[str, Any]:
    return {"type": "BlockStored", "block_hashes": list(keys), "parent_block_hash": None,
            "token_ids": [], "block_size": 16, "lora_id": None, "medium": medium,
            "lora_name": None, **extra}


def removed(*keys: bytes, medium: str = "CPU", **extra: Any) -> dict[str, Any]:
    return {"type": "BlockRemoved", "block_hashes": list(keys), "medium": medium, **extra}


def mirror(max_blocks: int = 8, **kw: Any) -> tuple[LookupMirror, Feed]:
    feed = Feed()
    m = LookupMirror(feed, NS, max_blocks, **kw)  # type: ignore[arg-type]
    m.drain()  # the first drain resyncs
    return m, feed


def held(m: LookupMirror, *keys: bytes, epoch: int = EPOCH) -> bool:
    return m.may_hold(NS, list(keys), epoch)


def test_a_block_counts_until_it_has_left_every_host_medium() -> None:
    m, feed = mirror()
    feed.send(stored(A, B), stored(A, medium="DISK"))
    assert held(m, A) and held(m, B) and not held(m, C)
    feed.send(removed(A))  # still on disk
    assert held(m, A)
    feed.send(removed(A, medium="DISK"), removed(B))
    assert not held(m, A, B)


def test_gpu_and_remote_blocks_do_not_count() -> None:
    m, feed = mirror()
    feed.send(stored(A, medium="GPU", engine_id="e1"), stored(B, medium="REMOTE"))
    assert not held(m, A, B)


def test_all_blocks_cleared_and_a_new_epoch_forget_everything() -> None:
    m, feed = mirror()
    feed.send(stored(A, B))
    feed.send({"type": "AllBlocksCleared"})
    assert not held(m, A, B)
    feed.send(stored(C))
    feed.send(stored(D), epoch=EPOCH + 1)
    assert held(m, D, epoch=EPOCH + 1) and not held(m, C, epoch=EPOCH + 1)


def test_maybe_for_a_daemon_epoch_not_followed_or_unknown() -> None:
    m, feed = mirror()
    feed.send(stored(A))
    assert not held(m, B)
    assert held(m, B, epoch=EPOCH + 1)  # the engine met a restarted daemon: not followed yet
    assert m.may_hold(NS, [B], None)


def test_maybe_while_the_subscriber_is_incomplete_and_resync_after_a_gap() -> None:
    now = [0.0]
    m, feed = mirror(resync_s=5.0, clock=lambda: now[0])
    feed.complete = False  # first batch not seen, subscription not proven, or a gap
    assert held(m, B)
    feed.gap, feed.complete = True, False
    assert held(m, B) and feed.resyncs == 1  # only the first drain's
    now[0] = 5.0
    assert held(m, B) and feed.resyncs == 2


def test_maybe_while_batches_wait_past_one_drain() -> None:
    m, feed = mirror(max_batches=2)
    for _ in range(3):
        feed.send(stored(C))
    assert held(m, B)  # one batch still waits
    assert not held(m, B)


def test_maybe_for_another_namespace() -> None:
    m, feed = mirror()
    feed.send()
    assert not held(m, B)
    assert m.may_hold(b"o" * 16, [B], EPOCH)


def test_past_its_bound_the_mirror_stays_maybe_until_the_daemon_clears() -> None:
    m, feed = mirror(max_blocks=2)
    feed.send(stored(A, B))
    assert not held(m, C)
    feed.send(stored(A, medium="DISK"))  # a known block: no new entry
    assert not held(m, C)
    feed.send(stored(C))
    assert len(m.media) == 2 and held(m, D)
    feed.send(removed(A, medium="CPU"), removed(A, medium="DISK"))
    assert held(m, D)  # C is still unrecorded
    feed.send({"type": "AllBlocksCleared"})
    assert not held(m, D)


def test_the_engines_own_cpu_writes_count_until_they_expire() -> None:
    now = [0.0]
    m, feed = mirror(max_blocks=2, expect_s=1.0, clock=lambda: now[0])
    feed.send()  # the epoch followed
    m.expect([A, B, C])  # bounded: A is forgotten first
    assert held(m, B) and held(m, C) and not held(m, A)
    now[0] = 1.0
    assert not held(m, B, C)


def test_a_mirror_needs_room_for_a_block() -> None:
    with pytest.raises(ValueError, match="max_blocks"):
        LookupMirror(Feed(), NS, 0)  # type: ignore[arg-type]
