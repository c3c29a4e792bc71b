"""What keeps a resident block out of a policy's victim order: leases, pins (optionally with a
TTL) and, leaf-first, resident children.

A held block is *parked*: out of the victim order, its state still updated on access, and put
back with a fresh priority when the last thing holding it goes. :class:`Holds` is the part of
:class:`~asymcache.cacheserver.policy.base.ResidencyPolicy` that keeps this bookkeeping; the
policy gives it ``blocks`` (resident infos), ``leaf_first`` (whether a resident child holds its
parent) and the victim order's ``_enqueue`` / ``_dequeue``.
"""

from __future__ import annotations

import heapq
import itertools
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.base import BlockInfo, Key


class Holds(ABC):
    """Leases, pins and resident children of one policy's blocks (a mixin, module doc)."""

    blocks: dict[Key, BlockInfo]
    leaf_first: bool

    def _init_holds(self) -> None:
        self._leased: set[Key] = set()  # leased by some engine (the count is the sessions')
        self._pins: dict[Key, float | None] = {}
        self._pin_heap: list[tuple[float, int, Key]] = []
        self._pin_seq = itertools.count()
        self._parked: set[Key] = set()  # held blocks out of the victim order
        self._kids: dict[Key, set[Key]] = {}  # parent key -> its resident children

    @abstractmethod
    def _enqueue(self, key: Key, now: float) -> None:
        """Put ``key`` into the victim order with its current priority (the policy's)."""

    @abstractmethod
    def _dequeue(self, key: Key) -> None:
        """Take ``key`` out of the victim order if it is there (the policy's)."""

    # ---- events -------------------------------------------------------------------------
    def protect(self, key: Key) -> None:
        self._leased.add(key)
        self._park(key)

    def unprotect(self, key: Key, now: float = 0.0) -> None:
        self._leased.discard(key)
        self._unpark_if_free(key, now)

    def pin(self, key: Key, until: float | None = None) -> None:
        self._pins[key] = until
        if until is not None:
            heapq.heappush(self._pin_heap, (until, next(self._pin_seq), key))
        self._park(key)

    def unpin(self, key: Key, now: float = 0.0) -> None:
        self._pins.pop(key, None)
        self._unpark_if_free(key, now)

    # ---- queries ------------------------------------------------------------------------
    def is_protected(self, key: Key, now: float) -> bool:
        if key in self._leased:
            return True
        if key not in self._pins:
            return False
        until = self._pins[key]
        return until is None or until > now

    @property
    def evictable(self) -> int:
        return len(self.blocks) - len(self._parked)

    def resident_children(self, key: Key) -> int:
        """How many children of ``key`` are held here (0 unless ``tracks_structure``)."""
        kids = self._kids.get(key)
        return len(kids) if kids else 0

    # ---- internals ----------------------------------------------------------------------
    def _held(self, key: Key, now: float) -> bool:
        """Protected, or (structure-aware, prefix reuse) the parent of a resident block.

        ``is_protected`` inlined (a hot path)."""
        if key in self._leased:
            return True
        pins = self._pins
        if key in pins:
            until = pins[key]
            if until is None or until > now:
                return True
        return self.leaf_first and bool(self._kids.get(key))

    def _refresh(self, key: Key, now: float) -> None:
        """Re-decide whether resident ``key`` is in the victim order, and re-rank it if so."""
        if self._held(key, now):
            if key not in self._parked:
                self._dequeue(key)
                self._parked.add(key)
        else:
            self._parked.discard(key)
            self._enqueue(key, now)

    def _park(self, key: Key) -> None:
        if key in self.blocks and key not in self._parked:
            self._dequeue(key)
            self._parked.add(key)

    def _unpark_if_free(self, key: Key, now: float) -> None:
        if key in self._parked and not self._held(key, now):
            self._parked.discard(key)
            self._enqueue(key, now)

    def _expire_pins(self, now: float) -> None:
        heap = self._pin_heap
        while heap and heap[0][0] <= now:
            until, _, key = heapq.heappop(heap)
            if key in self._pins and self._pins[key] == until:
                del self._pins[key]
                self._unpark_if_free(key, now)

    def _link(self, info: BlockInfo, now: float) -> None:
        """Record resident ``info`` under its parent; re-rank the neighbours it affects."""
        parent, kids = info.parent, self._kids
        if parent is not None:
            siblings = kids.get(parent)
            if siblings is None:
                kids[parent] = {info.key}
            else:
                siblings.add(info.key)
            if parent in self.blocks:
                self._refresh(parent, now)
        for kid in kids.get(info.key, ()):
            self._refresh(kid, now)

    def _unlink(self, info: BlockInfo, now: float) -> None:
        if info.parent is not None:
            kids = self._kids.get(info.parent)
            if kids is not None:
                kids.discard(info.key)
                if not kids:
                    del self._kids[info.parent]
            if info.parent in self.blocks:
                self._refresh(info.parent, now)
        for kid in self._kids.get(info.key, ()):
            self._refresh(kid, now)
