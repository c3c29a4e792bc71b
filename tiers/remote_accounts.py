"""What the remote tier accounts for (``tiers/remote.py``): its blocks, their bytes, its errors.

The cluster is shared, so a remote tier cannot count what the cluster holds; it counts what it
is responsible for: blocks it *stored* (written by this process) and blocks it *adopted* (found
in the cluster, stored by another host, and tracked here so a daemon can bound them). Both count
toward ``used`` and ``capacity``; only stored blocks are deleted from the cluster when forgotten.

Every method takes the lock it is given (the writer's), so accounting stays consistent with the
write queue.
"""

from __future__ import annotations

import threading
from collections import Counter


class RemoteAccounts:
    """Accounted blocks (key -> bytes), adopted keys, lost keys, error and event counters."""

    def __init__(self, capacity: int, lock: threading.Condition) -> None:
        self.capacity = capacity
        self.lock = lock
        self.sizes: dict[bytes, int] = {}
        self.adopted: set[bytes] = set()
        self.used = 0
        self._failed: list[bytes] = []
        self._errors: Counter[str] = Counter()
        self._stats: Counter[str] = Counter()

    def __contains__(self, key: bytes) -> bool:
        return key in self.sizes

    def take(self, key: bytes, size: int, adopted: bool = False) -> bool:
        """Account ``key`` at ``size`` bytes unless that passes the capacity; ``True`` also
        when it is accounted already."""
        with self.lock:
            if key in self.sizes:
                return True
            if self.used + size > self.capacity:
                return False
            self.sizes[key] = size
            self.used += size
            if adopted:
                self.adopted.add(key)
            return True

    def forget(self, key: bytes, lost: bool = False) -> tuple[bool, bool]:
        """Stop accounting ``key``: (whether it was accounted, whether this tier stored it).
        ``lost`` also reports it once through :meth:`take_failed`."""
        with self.lock:
            size = self.sizes.pop(key, None)
            adopted = key in self.adopted
            self.adopted.discard(key)
            if size is not None:
                self.used -= size
                if lost:
                    self._failed.append(key)
            return size is not None, not adopted

    def count(self, kind: str, n: int = 1) -> None:
        """One more error of ``kind`` (the ``error_counts()`` key)."""
        with self.lock:
            self._errors[kind] += n

    def event(self, name: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``name`` of :meth:`stats`."""
        with self.lock:
            self._stats[name] += n

    def refused(self, kind: str | None) -> bool:
        """A refused put (``kind`` is also counted as an error unless None); returns False."""
        with self.lock:
            self._stats["put_refused"] += 1
            if kind is not None:
                self._errors[kind] += 1
        return False

    def take_failed(self) -> list[bytes]:
        with self.lock:
            lost = [key for key in dict.fromkeys(self._failed) if key not in self.sizes]
            self._failed.clear()
        return lost

    def errors(self) -> dict[str, int]:
        with self.lock:
            return dict(self._errors)

    def stats(self) -> dict[str, int]:
        with self.lock:
            return dict(self._stats)
