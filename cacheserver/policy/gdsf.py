"""Greedy-Dual-Size-Frequency: ``H = L + frequency · cost / size``, ``L ← H`` of each victim."""

from __future__ import annotations

from asymcache.cacheserver.policy.base import BlockInfo, Key, register_policy
from asymcache.cacheserver.policy.costed import CostedPolicy


@register_policy("gdsf")
class GDSFPolicy(CostedPolicy):
    """GDSF (Cherkasova 1998) with the cost model's miss cost; the clock ``L`` ages old values."""

    prices_backing = True

    def __init__(self, capacity: int, **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self._count: dict[Key, int] = {}
        self._base: dict[Key, float] = {}  # L when the block was last used
        self.inflation = 0.0

    def score(self, key: Key) -> float:
        """``H = L(last use) + count · Cmiss / size`` of a resident block."""
        info = self.blocks[key]
        return self._base[key] + self._count[key] * self.miss_cost(info) / self.size_of(info)

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._count[info.key] = 1
        self._base[info.key] = self.inflation

    def _on_access(self, key: Key, now: float) -> None:
        self._count[key] += 1
        self._base[key] = self.inflation

    def _on_remove(self, key: Key) -> None:
        self._count.pop(key, None)
        self._base.pop(key, None)

    def _on_evict(self, key: Key, now: float) -> None:
        self.inflation = max(self.inflation, self.score(key))

    def _priority(self, key: Key, now: float) -> tuple:
        return (self.score(key), -self.blocks[key].position)
