"""Recency baselines: plain LRU, LRU with tail-first ties (vLLM's automatic prefix cache), and
the latter applying client signals (``lru_signals``)."""

from __future__ import annotations

from collections.abc import Iterable

from asymcache.cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy

_BASE_ENQUEUE = ResidencyPolicy._enqueue


@register_policy("lru")
class LRUPolicy(ResidencyPolicy):
    """Evict the least recently used block; ties (same access time) go by insertion order."""

    def __init__(self, capacity: int, **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self._last: dict[Key, float] = {}

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._last[info.key] = now

    def access_many(self, keys: Iterable[Key], now: float) -> None:
        """``access`` of each key in order, with the hooks inlined (subclasses that replace a
        hook or the victim order take the generic path)."""
        cls = type(self)
        if (cls._on_access is not LRUPolicy._on_access or cls._enqueue is not _BASE_ENQUEUE
                or cls.tracks_structure or self.signals):
            super().access_many(keys, now)
            return
        blocks, last, parked, push, priority = (self.blocks, self._last, self._parked,
                                                 self.order.push, self._priority)
        for key in keys:
            if key in blocks:
                self._now = now
                last[key] = now
                if key not in parked:
                    push(key, priority(key, now))

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


@register_policy("lru_signals")
class LRUSignalsPolicy(LRUTailPolicy):
    """``lru_tail`` that applies the client signals as ``asym`` does (``sessions.py``): blocks
    of ended sessions first, blocks under retention last, recency within each band. The
    tables set it beside ``asym`` with signals, to show what the signals give by themselves."""

    signal_aware = True

    def __init__(self, capacity: int, **kwargs: object) -> None:
        kwargs["signals"] = True
        super().__init__(capacity, **kwargs)
