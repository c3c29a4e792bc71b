"""Recency baselines: plain LRU, and LRU with tail-first ties (vLLM's automatic prefix cache)."""

from __future__ import annotations

from cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy


@register_policy("lru")
class LRUPolicy(ResidencyPolicy):
    """Evict the least recently used block; ties (same access time) go by insertion order."""

    def __init__(self, capacity: int, **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self._last: dict[Key, float] = {}

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._last[info.key] = now

    def _on_access(self, key: Key, now: float) -> None:
        self._last[key] = now

    def _on_remove(self, key: Key) -> None:
        self._last.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return (self._last[key],)


@register_policy("lru_tail")
class LRUTailPolicy(LRUPolicy):
    """LRU where blocks last used at the same time leave deepest-first.

    vLLM frees a finished request's blocks in reverse order, so the tail of a sequence reaches
    the free queue first and is reused (evicted) first; ordering ties by ``-position`` does the
    same and keeps a shared prefix alive longest.
    """

    def _priority(self, key: Key, now: float) -> tuple:
        return (self._last[key], -self.blocks[key].position)
