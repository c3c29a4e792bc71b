"""Which CPU-tier slots the daemon handed this engine, and under which registration.

A CPU slot number means something only within the registration (client ``generation``) whose
reply carried it: after a daemon restart the same number names a slot of another slab, and
after a re-HELLO to the same daemon the lease or reservation behind it is gone. The engine
records every CPU slot LOOKUP, PROMOTE and ALLOCATE hand out, with that generation, and reads or
writes a slot only through :meth:`SlotGrants.take`, which says whether (and under which
generation) it was granted. Memory stays bounded: a slot is forgotten when it is used, when its
key is released, and every older grant when one from a newer generation arrives.
"""

from __future__ import annotations

from collections.abc import Iterable


class SlotGrants:
    """``key -> (cpu slot, generation)`` of the slots granted to this engine (one thread)."""

    def __init__(self) -> None:
        self._by_key: dict[bytes, tuple[int, int]] = {}
        self._generation = -1

    def __len__(self) -> int:
        return len(self._by_key)

    def grant(self, key: bytes, slot: int, generation: int) -> None:
        """Record that ``slot`` was handed out for ``key`` in ``generation`` (older grants,
        stale from now on, are dropped)."""
        if generation != self._generation:
            self._by_key.clear()
            self._generation = generation
        self._by_key[key] = (slot, generation)

    def take(self, key: bytes, slot: int) -> int | None:
        """The generation ``slot`` was granted in for ``key`` (forgetting the grant), or
        ``None`` when it was not granted, or only under an earlier registration."""
        got = self._by_key.get(key)
        if got is None or got[0] != slot:
            return None
        del self._by_key[key]
        return got[1]

    def drop(self, keys: Iterable[bytes]) -> None:
        """Forget the grants of ``keys`` (released by the engine)."""
        for key in keys:
            self._by_key.pop(key, None)

    def clear(self) -> None:
        self._by_key.clear()
