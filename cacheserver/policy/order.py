"""The victim order of a policy: a min-heap of priorities with lazy deletion."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

Key = Hashable


class HeapOrder:
    """A min-priority order with lazy deletion: O(log n) push, amortized O(log n) pop."""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple, int, Key]] = []
        self._live: dict[Key, int] = {}
        self._seq = itertools.count()

    def push(self, key: Key, priority: tuple) -> None:
        stamp = next(self._seq)
        self._live[key] = stamp
        heapq.heappush(self._heap, (priority, stamp, key))
        if len(self._heap) > 4 * len(self._live) + 64:
            self._compact()

    def discard(self, key: Key) -> None:
        self._live.pop(key, None)

    def pop(self) -> Key | None:
        heap = self._heap
        while heap:
            _, stamp, key = heapq.heappop(heap)
            if self._live.get(key) == stamp:
                del self._live[key]
                return key
        return None

    def peek(self) -> tuple[Key, tuple] | None:
        """The lowest ``(key, priority)`` without removing it (``None`` if empty)."""
        heap = self._heap
        while heap:
            priority, stamp, key = heap[0]
            if self._live.get(key) == stamp:
                return key, priority
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return len(self._live)

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
        heapq.heapify(self._heap)
