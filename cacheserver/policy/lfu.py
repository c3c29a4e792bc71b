"""Frequency baseline: evict the least frequently used block, oldest access first on ties."""

from __future__ import annotations

from asymcache.cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy


@register_policy("lfu")
class LFUPolicy(ResidencyPolicy):
    """Plain LFU: the count of uses while resident (a re-inserted block starts again at 1)."""

    def __init__(self, capacity: int, **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self._count: dict[Key, int] = {}
        self._last: dict[Key, float] = {}

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._count[info.key] = 1
        self._last[info.key] = now

    def _on_access(self, key: Key, now: float) -> None:
        self._count[key] += 1
        self._last[key] = now

    def _on_remove(self, key: Key) -> None:
        self._count.pop(key, None)
        self._last.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return (self._count[key], self._last[key], -self.blocks[key].position)
