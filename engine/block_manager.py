"""The engine's own GPU slot allocator (DESIGN.md section 4): torch-free, no I/O.

The KV pool has ``num_slots`` block slots. A slot is *empty* (on the free list), *referenced*
(used by one or more running requests; never given up), or *cached and idle* (holds a committed
block that no request uses: reusable on a hit, evictable). Idle cached slots are kept in a local
LRU order; when the daemon is absent or names too few victims, the engine evicts from it. A
request's slots are released tail first, so among blocks released together the deepest leaves
first (vLLM's order). A TTL pin keeps an idle slot out of local eviction until it expires.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence


class BlockManager:
    """Free list, key ↔ slot map, reference counts and local LRU of one KV pool."""

    def __init__(self, num_slots: int) -> None:
        if num_slots <= 0:
            raise ValueError(f"num_slots must be positive, got {num_slots}")
        self.num_slots = num_slots
        self._empty: deque[int] = deque(range(num_slots))
        self._refs = [0] * num_slots
        self._key_of: list[bytes | None] = [None] * num_slots
        self._slot_of: dict[bytes, int] = {}
        self._idle: OrderedDict[int, None] = OrderedDict()  # cached, unreferenced; oldest first
        self._pinned_until: dict[int, float] = {}

    # ---- queries --------------------------------------------------------------------------
    @property
    def num_empty(self) -> int:
        return len(self._empty)

    @property
    def num_idle(self) -> int:
        return len(self._idle)

    @property
    def num_used(self) -> int:
        """Slots referenced by running requests."""
        return self.num_slots - len(self._empty) - len(self._idle)

    def can_allocate(self, n: int, now: float) -> bool:
        """Whether ``n`` slots can be had from the free list plus locally evictable slots."""
        if n <= len(self._empty):
            return True
        return n <= len(self._empty) + self._num_evictable(now, n - len(self._empty))

    def lookup(self, key: bytes) -> int | None:
        """The slot holding the committed block ``key``, or ``None``."""
        return self._slot_of.get(key)

    def key_of(self, slot: int) -> bytes | None:
        return self._key_of[slot]

    def held(self) -> list[tuple[bytes, int]]:
        """Every committed block as ``(key, slot)`` (what HELLO announces to the daemon)."""
        return list(self._slot_of.items())

    def is_idle(self, slot: int) -> bool:
        return slot in self._idle

    def is_pinned(self, slot: int, now: float) -> bool:
        return self._pinned_until.get(slot, 0.0) > now

    # ---- protocol -------------------------------------------------------------------------
    def acquire(self, slot: int) -> None:
        """Take a reference on a cached slot (a resident hit); it leaves the LRU order."""
        if self._key_of[slot] is None and self._refs[slot] == 0:
            raise ValueError(f"slot {slot} is empty; only cached or used slots can be acquired")
        self._refs[slot] += 1
        self._idle.pop(slot, None)

    def take_empty(self, n: int) -> list[int]:
        """Up to ``n`` slots from the free list, each referenced once."""
        out = [self._empty.popleft() for _ in range(min(n, len(self._empty)))]
        for slot in out:
            self._refs[slot] = 1
        return out

    def evict_lru(self, n: int, now: float) -> list[tuple[int, bytes]]:
        """Evict up to ``n`` idle, unpinned slots, oldest first; each is returned referenced
        once (ready for reuse) with the key it held, so the caller can tell the daemon."""
        victims: list[int] = []
        for slot in self._idle:
            if len(victims) == n:
                break
            if self._pinned_until.get(slot, 0.0) <= now:
                victims.append(slot)
        out = []
        for slot in victims:
            key = self._forget(slot)
            self._refs[slot] = 1
            out.append((slot, key))
        return out

    def evict(self, slot: int) -> bytes | None:
        """Give up the idle slot ``slot`` (a victim named by the daemon) and return it referenced
        once; ``None`` (and no change) if the slot is not idle, e.g. a request uses it."""
        if slot not in self._idle:
            return None
        key = self._forget(slot)
        self._refs[slot] = 1
        return key

    def commit(self, slot: int, key: bytes) -> bool:
        """Record that the referenced ``slot`` now holds the full block ``key``. ``False`` if
        another slot already holds that key (this slot then stays private to its request)."""
        if self._refs[slot] <= 0:
            raise ValueError(f"slot {slot} is not referenced; commit only slots in use")
        if key in self._slot_of:
            return self._slot_of[key] == slot
        if self._key_of[slot] is not None:
            raise ValueError(f"slot {slot} already holds another block")
        self._key_of[slot] = key
        self._slot_of[key] = slot
        return True

    def release(self, slots: Sequence[int]) -> None:
        """Drop one reference on each slot, in the order given (pass a request's table reversed
        for tail-first eviction). Cached slots reaching zero become idle; others become empty."""
        for slot in slots:
            if self._refs[slot] <= 0:
                raise ValueError(f"slot {slot} released more often than taken")
            self._refs[slot] -= 1
            if self._refs[slot] == 0:
                if self._key_of[slot] is not None:
                    self._idle[slot] = None
                else:
                    self._empty.append(slot)

    def uncache(self, slot: int) -> bytes | None:
        """Stop offering the block in ``slot`` (its tenant's data was purged): an idle slot
        becomes empty, a referenced one private to its requests (empty once released). The key
        it held, or ``None``."""
        key = self._key_of[slot]
        if key is None:
            return None
        if self._refs[slot] == 0:
            self._forget(slot)
            self._empty.append(slot)
        else:
            self._pinned_until.pop(slot, None)
            self._key_of[slot] = None
            del self._slot_of[key]
        return key

    def pin(self, slots: Iterable[int], until: float) -> None:
        """Keep cached ``slots`` out of local eviction until ``until`` (same clock as ``now``)."""
        for slot in slots:
            if self._key_of[slot] is not None:
                self._pinned_until[slot] = max(until, self._pinned_until.get(slot, 0.0))

    # ---- internals ------------------------------------------------------------------------
    def _forget(self, slot: int) -> bytes:
        key = self._key_of[slot]
        assert key is not None and self._refs[slot] == 0
        self._idle.pop(slot, None)
        self._pinned_until.pop(slot, None)
        self._key_of[slot] = None
        del self._slot_of[key]
        return key

    def _num_evictable(self, now: float, enough: int) -> int:
        count = 0
        for slot in self._idle:
            if self._pinned_until.get(slot, 0.0) <= now:
                count += 1
                if count >= enough:
                    break
        return count
