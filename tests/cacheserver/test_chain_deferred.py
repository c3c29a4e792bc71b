"""Demotions placed after the reply (``TierChain.defer``): the evicted block's bytes are read at
once, so its slot may be refilled before the level below receives them; the record stays
indexed until then; without ``defer`` the demotion happens inside the eviction, as before."""

from __future__ import annotations

from dataclasses import dataclass

from asymcache.cacheserver.chain import ChainEvents, Level, TierChain
from asymcache.cacheserver.policy import create_policy
from asymcache.cacheserver.policy.base import BlockInfo


@dataclass(eq=False)
class Block:
    key: int
    where: int = 0
    pinned: bool = False
    pin_until: float | None = None
    busy: int = 0

    def info(self) -> BlockInfo:
        return BlockInfo(self.key, None, 0, 16, 16)

    def pin_active(self, now: float) -> bool:
        return False


class Slots:
    """A store of ``capacity`` blocks' bytes, by key."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data: dict[int, bytes] = {}

    def fits(self, block: Block) -> bool:
        return True

    def full(self, block: Block) -> bool:
        return len(self.data) >= self.capacity

    def put(self, block: Block, data: bytes) -> bool:
        self.data[block.key] = bytes(data)
        return True

    def read(self, block: Block) -> bytes | None:
        return self.data.get(block.key)

    def drop(self, key: int, block: Block | None) -> None:
        self.data.pop(key, None)

    def take_failed(self) -> list:
        return []


class Demotions(ChainEvents):
    def __init__(self) -> None:
        self.seen: list[tuple[str, int]] = []

    def demoted(self, level: Level, block: Block) -> None:
        self.seen.append((level.name, block.key))


def _chain() -> tuple[TierChain, dict[int, Block], list[int], Demotions]:
    records: dict[int, Block] = {}
    discarded: list[int] = []

    def discard(block: Block) -> None:
        if not block.where and not block.busy:
            records.pop(block.key, None)
            discarded.append(block.key)

    events = Demotions()
    levels = [Level("cpu", Slots(2), create_policy("lru", 2, tier="cpu"), "next"),
              Level("disk", Slots(8), create_policy("lru", 8, tier="disk"))]
    return TierChain(levels, records.get, discard, events), records, discarded, events


def _put(chain: TierChain, records: dict[int, Block], key: int, t: float) -> None:
    records[key] = Block(key)
    assert chain.place(chain.levels[0], records[key], f"bytes {key}".encode(), t, admit=False)


def test_a_deferred_demotion_reads_now_and_places_below_after_the_reply() -> None:
    chain, records, discarded, events = _chain()
    cpu, disk = chain.levels
    _put(chain, records, 1, 0.0)
    _put(chain, records, 2, 1.0)
    later: list = []
    chain.defer = later.append
    _put(chain, records, 3, 2.0)  # evicts block 1 from the CPU tier
    chain.defer = None
    assert set(cpu.store.data) == {2, 3} and not disk.store.data  # not below yet
    assert records[1].busy == 1 and 1 not in discarded  # still indexed meanwhile
    assert events.seen == []
    cpu.store.data[3] = b"refilled"  # the freed slot is reused before the deferred work runs
    (place_below,) = later
    place_below()
    assert disk.store.data == {1: b"bytes 1"}  # the bytes it had when it was evicted
    assert records[1].where == disk.bit and records[1].busy == 0
    assert events.seen == [("cpu", 1)]


def test_a_deferred_demotion_the_level_below_refuses_lets_the_record_go() -> None:
    chain, records, discarded, _ = _chain()
    disk = chain.levels[1]
    disk.store.fits = lambda block: False  # type: ignore[method-assign]
    _put(chain, records, 1, 0.0)
    _put(chain, records, 2, 1.0)
    later: list = []
    chain.defer = later.append
    _put(chain, records, 3, 2.0)
    chain.defer = None
    assert 1 in records
    later[0]()
    assert 1 not in records and discarded == [1]  # held nowhere: dropped once placed nowhere


def test_without_defer_a_demotion_happens_inside_the_eviction() -> None:
    chain, records, _, events = _chain()
    for key in (1, 2, 3):
        _put(chain, records, key, float(key))
    assert chain.levels[1].store.data == {1: b"bytes 1"} and events.seen == [("cpu", 1)]
