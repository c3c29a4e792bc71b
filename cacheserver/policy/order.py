"""The victim order of a policy: a min-heap of priorities with lazy deletion and deferred pushes."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Hashable

Key = Hashable

COMPACT_FLOOR = 1024  # stale heap entries tolerated on top of 4 per live key before compacting


class HeapOrder:
    """A min-priority order: O(1) push, amortized O(log n) pop.

    A push is only recorded (the key's newest ``(priority, stamp)``); pushes reach the heap when
    the order is next read (``pop``/``peek``), so a key re-ranked many times between two reads
    costs one heap entry. Every push takes a fresh stamp, ties between equal priorities go to
    the older stamp, and the heap only ever yields a key's newest entry: the order of pops is
    exactly that of pushing each entry as it came. Memory: one entry per key pending plus the
    heap, compacted when stale entries exceed ``4 × live + COMPACT_FLOOR``.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[tuple, int, Key]] = []
        self._live: dict[Key, int] = {}
        self._pending: dict[Key, tuple[tuple, int, Key]] = {}
        self._seq = itertools.count()

    def push(self, key: Key, priority: tuple) -> None:
        """Rank ``key`` at ``priority`` (replacing any earlier rank)."""
        stamp = next(self._seq)
        self._live[key] = stamp
        self._pending[key] = (priority, stamp, key)

    def push_many(self, ranked: list[tuple[Key, tuple]]) -> None:
        """``push`` of each ``(key, priority)`` in order."""
        live, pending, seq = self._live, self._pending, self._seq
        for key, priority in ranked:
            stamp = next(seq)
            live[key] = stamp
            pending[key] = (priority, stamp, key)

    def discard(self, key: Key) -> None:
        self._live.pop(key, None)
        self._pending.pop(key, None)

    def pop(self) -> Key | None:
        if self._pending:
            self._flush()
        heap, live = self._heap, self._live
        while heap:
            _, stamp, key = heapq.heappop(heap)
            if live.get(key) == stamp:
                del live[key]
                return key
        return None

    def peek(self) -> tuple[Key, tuple] | None:
        """The lowest ``(key, priority)`` without removing it (``None`` if empty)."""
        if self._pending:
            self._flush()
        heap, live = self._heap, self._live
        while heap:
            priority, stamp, key = heap[0]
            if live.get(key) == stamp:
                return key, priority
            heapq.heappop(heap)
        return None

    def __len__(self) -> int:
        return len(self._live)

    def _flush(self) -> None:
        """Move the pending pushes into the heap (in any order: their stamps are unique)."""
        pending, heap = self._pending, self._heap
        if len(pending) == 1:  # the common case: one re-rank between two reads
            heapq.heappush(heap, pending.popitem()[1])
        elif len(pending) * 8 > len(heap):
            heap.extend(pending.values())
            pending.clear()
            heapq.heapify(heap)
        else:
            push = heapq.heappush
            for entry in pending.values():
                push(heap, entry)
            pending.clear()
        if len(heap) > 4 * len(self._live) + COMPACT_FLOOR:
            self._heap = [e for e in heap if self._live.get(e[2]) == e[1]]
            heapq.heapify(self._heap)
