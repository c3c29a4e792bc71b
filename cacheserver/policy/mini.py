"""Miniature simulations that tell a policy whether its value ranking beats plain LRU here.

Two small copies of the policy run on a fixed sample of the keys (Waldspurger et al., "Cache
Modeling and Optimization using Miniature Simulations", ATC 2017): one ranks by value, one by
recency alone, each ``rate`` times the real capacity, each fed every use of a sampled key;
``rate = min(max_rate, target_blocks / capacity)``: copies of ``target_blocks`` in large tiers,
and in small ones at most ``max_rate`` of the keys (``AsymConfig.select_rate``; at 1.0 the
copies of a small tier are full-size replicas, which triples the work of every use).
Each adds up the miss cost it saves (its hits, priced like the real tier) with decay. The real
policy switches to ranking by value once the value copy's lead is both ``margin`` of what the
LRU copy saved and ``z`` standard deviations of the paired difference (the uses where exactly
one copy hit), and back to recency once the LRU copy leads by ``z`` standard deviations.

Keys are sampled by a fixed hash (xxh3 of the key's bytes: ``int``, ``bytes`` or ``str``), never
Python's per-process salted built-in, so a run is reproducible. Bounded: the copies hold
``rate × capacity`` blocks each plus their ghost histories. The policy forwards leases and pins
of sampled keys to both copies, so they are held there as they are in the real tier.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable

import xxhash

from asymcache.cacheserver.policy.base import BlockInfo, ResidencyPolicy

HASH_SPACE = 1 << 64
_SAMPLED_MAX = 1 << 17  # remembered sampling answers (a bound on memory, not on correctness)


def key_bytes(key: Hashable) -> bytes:
    """The bytes a key is sampled by; ``TypeError`` for keys that are not int, bytes or str."""
    if type(key) is bytes:
        return key
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    if isinstance(key, int):
        return key.to_bytes(16, "little", signed=True)
    if isinstance(key, str):
        return key.encode()
    raise TypeError(f"policy keys must be int, bytes or str to be sampled, got {type(key)}")


class ModeSelector:
    """Two miniature copies (value ranking, recency ranking) and the verdict between them."""

    def __init__(self, capacity: int, make: Callable[[int, bool], ResidencyPolicy],
                 price: Callable[[BlockInfo], float], *, target_blocks: int = 2048,
                 max_rate: float = 1.0, margin: float = 0.01, z: float = 2.0,
                 half_life: int = 50_000, dwell: int = 4096) -> None:
        self.rate = min(max_rate, target_blocks / max(1, capacity))
        mini = max(1, round(capacity * self.rate))
        self.copies = {True: make(mini, True), False: make(mini, False)}
        self.saved = {True: 0.0, False: 0.0}
        self.price, self.margin, self.half_life, self.dwell = price, margin, half_life, dwell
        self.z = z
        self._squares = 0.0  # Σ cost² of uses where exactly one copy hit (decayed)
        self.by_value = False
        self.flips = 0
        self._threshold = int(self.rate * HASH_SPACE)
        self._events = 0
        self._since_flip = 0
        self._sampled: dict[Hashable, bool] = {}

    def sampled(self, key: Hashable) -> bool:
        """Whether ``key``'s uses reach the copies. Asked for every use, lease and pin, so the
        answer (a fixed function of the key) is remembered, in a table that is emptied when
        it reaches ``_SAMPLED_MAX`` keys."""
        if self.rate >= 1.0:
            return True
        known = self._sampled.get(key)
        if known is None:
            known = xxhash.xxh3_64_intdigest(key_bytes(key)) < self._threshold
            if len(self._sampled) >= _SAMPLED_MAX:
                self._sampled.clear()
            self._sampled[key] = known
        return known

    def use(self, info: BlockInfo, now: float) -> bool:
        """Replay one use of ``info`` (if sampled) in both copies; True if the verdict flipped.

        A verdict stands for at least ``dwell`` sampled uses, so it cannot flap. The use is
        priced only when a copy hit (the price reads the real tier, which the copies leave
        alone, so pricing after them gives the same figure).
        """
        if self.rate < 1.0 and not self.sampled(info.key):
            return False
        copies = self.copies
        by_value_hit = self._use(copies[True], info, now)
        lru_hit = self._use(copies[False], info, now)
        if by_value_hit or lru_hit:
            cost = self.price(info)
            saved = self.saved
            if by_value_hit:
                saved[True] += cost
            if lru_hit:
                saved[False] += cost
            if by_value_hit != lru_hit:
                self._squares += cost * cost
        self._events += 1
        if self._events >= self.half_life:
            self.saved = {k: v * 0.5 for k, v in self.saved.items()}
            self._squares *= 0.5
            self._events = 0
        self._since_flip += 1
        return self._since_flip >= self.dwell and self._decide()

    @staticmethod
    def _use(copy: ResidencyPolicy, info: BlockInfo, now: float) -> bool:
        if info.key in copy:
            copy.access(info.key, now)
            return True
        if copy.admit(info, now):
            held, capacity = len(copy), copy.capacity
            while held >= capacity and copy.evict(now) is not None:
                held -= 1  # each victim leaves the copy
            if held < capacity:
                copy.insert(info, now)
        return False

    def _decide(self) -> bool:
        lead = self.saved[True] - self.saved[False]
        noise = self.z * math.sqrt(self._squares)
        if self.by_value:
            verdict = lead >= -noise
        else:
            verdict = lead > max(self.margin * self.saved[False], noise)
        if verdict == self.by_value:
            return False
        self.by_value, self._since_flip = verdict, 0
        self.flips += 1
        return True
