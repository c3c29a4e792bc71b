"""Pensieve's eviction rule (Yu et al., EuroSys 2025): evict the lowest ``cost / idle time``.

The score changes with the clock alone, so no static heap orders it. Blocks are grouped into
cost classes a quarter of an octave wide (costs within ~19% of each other); inside a class the
least recently used block has the lowest score, so each class is an LRU list and a victim is
the class head with the lowest ``cost / (now − last use)``. An eviction looks at one head per
class: O(classes), a small constant (about 4 per factor of 2 between the cheapest and the
dearest block).
"""

from __future__ import annotations

import math
from collections import OrderedDict

from asymcache.cacheserver.policy.base import BlockInfo, Key, register_policy
from asymcache.cacheserver.policy.costed import CostedPolicy

CLASSES_PER_OCTAVE = 4
MIN_IDLE_S = 1e-6  # a block used at this very instant is never the cheapest to drop


@register_policy("pensieve")
class PensievePolicy(CostedPolicy):
    """Evict the block with the least miss cost per second of idleness."""

    supports_signals = False  # its victim order is per cost class, not the heap

    prices_backing = True

    def __init__(self, capacity: int, **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self._last: dict[Key, float] = {}
        self._cost: dict[Key, float] = {}
        self._class_of: dict[Key, int] = {}
        self._classes: dict[int, OrderedDict[Key, None]] = {}

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._last[info.key] = now

    def _on_access(self, key: Key, now: float) -> None:
        self._last[key] = now

    def _on_remove(self, key: Key) -> None:
        self._last.pop(key, None)
        self._cost.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return (self._cost.get(key, 0.0) / max(now - self._last[key], MIN_IDLE_S),)

    def _enqueue(self, key: Key, now: float) -> None:
        self._dequeue(key)
        cost = self.miss_cost(self.blocks[key])
        self._cost[key] = cost
        cls = math.floor(math.log2(max(cost, 1e-12)) * CLASSES_PER_OCTAVE)
        self._class_of[key] = cls
        self._classes.setdefault(cls, OrderedDict())[key] = None

    def _dequeue(self, key: Key) -> None:
        cls = self._class_of.pop(key, None)
        if cls is None:
            return
        members = self._classes[cls]
        del members[key]
        if not members:
            del self._classes[cls]

    def _pop(self, now: float) -> Key | None:
        best: Key | None = None
        best_score = math.inf
        for members in self._classes.values():
            head = next(iter(members))
            score = self._priority(head, now)[0]
            if score < best_score:
                best, best_score = head, score
        if best is not None:
            self._dequeue(best)
        return best
