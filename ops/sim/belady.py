"""Belady's MIN (offline, simulator only): evict the block whose next use is furthest away.

With the future known it also refuses to cache a block whose next use is later than that of
every evictable resident block (``admit`` says no), which makes it hit-optimal for one tier of
equal-sized blocks. It is blind to cost: hit-optimal is not cost-optimal, which is why the
simulator's gap-closed figure can exceed 1.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator, Mapping, Sequence

from asymcache.cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy


class NextUseOracle:
    """When each key is used next: built from every use time of every key (the whole trace).

    ``uses`` maps a key to its use times in ascending order, in the clock the policy sees.
    Memory: one float per use.
    """

    def __init__(self, uses: Mapping[Key, Sequence[float]]) -> None:
        self._uses = uses

    def next_use(self, key: Key, now: float) -> float:
        """The first use of ``key`` strictly after ``now`` (``inf`` if none)."""
        times = self._uses.get(key)
        if not times:
            return math.inf
        i = bisect.bisect_right(times, now)
        return times[i] if i < len(times) else math.inf

    def uses_until(self, key: Key, now: float) -> int:
        """How many uses of ``key`` happened at or before ``now`` (0 for an unknown key)."""
        return bisect.bisect_right(self._uses.get(key, ()), now)

    def last_use(self, key: Key, now: float) -> float:
        """The latest use of ``key`` at or before ``now`` (``-inf`` if none)."""
        times = self._uses.get(key, ())
        i = bisect.bisect_right(times, now)
        return times[i - 1] if i else -math.inf

    def histories(self) -> Iterator[Sequence[float]]:
        """Every key's ascending use times (for fitting reuse statistics offline)."""
        return iter(self._uses.values())


@register_policy("belady")
class BeladyPolicy(ResidencyPolicy):
    """MIN with bypass; needs ``oracle=NextUseOracle(...)`` at construction."""

    offline = True

    def __init__(self, capacity: int, *, oracle: NextUseOracle | None = None,
                 **kwargs: object) -> None:
        if oracle is None:
            raise ValueError("belady needs the future: pass oracle=NextUseOracle (simulator only)")
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self.oracle = oracle
        self._next: dict[Key, float] = {}

    def admit(self, info: BlockInfo, now: float) -> bool:
        """Cache unless the tier is full and ``info`` is needed later than every victim."""
        if len(self.blocks) < self.capacity:
            return True
        top = self.peek_victim(now)
        if top is None:
            return False
        return self.oracle.next_use(info.key, now) < -top[1][0]

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._next[info.key] = self.oracle.next_use(info.key, now)

    def _on_access(self, key: Key, now: float) -> None:
        self._next[key] = self.oracle.next_use(key, now)

    def _on_remove(self, key: Key) -> None:
        self._next.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return (-self._next[key], self.blocks[key].position)
