"""What a write-behind tier (disk, remote) accounts for, and how a put's blocks reach its queue.

A tier accounts a block from the moment ``put`` accepts it (queued or written) until it is
deleted, dropped as corrupt or its write fails; ``used`` and ``len`` answer from here, and
``take`` refuses what would pass ``capacity``. A block that was accounted and is then *lost* (a
failed write, a corrupt value) is reported once through :meth:`Accounts.take_failed`, so the
daemon can forget it. The remote tier also *adopts* blocks (found in the cluster, stored by
another host): they count toward ``used``, but only blocks this tier stored are deleted.

Every method takes the lock it is given (the write queue's), so accounting stays consistent with
the queue; :meth:`Accounts.settle` is the queue's ``on_done`` step shared by both tiers.
:class:`GroupedPut` runs one ``put``: it accepts (accounts) each block, hands the new writes to
the queue in groups so the writer works while the rest are encoded, and un-accounts what the
queue had no room for.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Sequence

from asymcache.tiers.base import BlockHeader, Buffer
from asymcache.tiers.write_behind import WriteBehind, WriteOp

Accept = Callable[[bytes, BlockHeader, Buffer], tuple[bool, WriteOp | None, bool]]


class Accounts:
    """Accounted blocks (key -> bytes), adopted keys, lost keys, error and event counters."""

    def __init__(self, capacity: int, lock: threading.Condition,
                 sizes: dict[bytes, int] | None = None) -> None:
        self.capacity = capacity
        self.lock = lock
        self.sizes: dict[bytes, int] = {} if sizes is None else sizes
        self.adopted: set[bytes] = set()
        self.used = sum(self.sizes.values())
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

    def settle(self, batch: list[WriteOp], latest: dict[bytes, WriteOp]) -> None:
        """After a write batch (under the lock, before it leaves ``latest``): count each failed
        op's error kind, and forget, as lost, a put that failed unless its key has a later op."""
        with self.lock:
            for op in batch:
                if op.failed is None:
                    continue
                self._errors[op.failed] += 1
                if op.value is not None and latest.get(op.key) is op:
                    self.forget(op.key, lost=True)

    def unaccept(self, ops: list[WriteOp]) -> set[bytes]:
        """Forget puts the full write queue refused (counted as ``queue_full``); their keys."""
        for op in ops:
            self.forget(op.key)
            self.refused("queue_full")
        return {op.key for op in ops}

    def count(self, kind: str, n: int = 1) -> None:
        """``n`` more errors of ``kind`` (the ``error_counts()`` key)."""
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
        """Keys lost since the last call (each once), unless accounted again since."""
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


class GroupedPut:
    """One ``put`` into a write-behind tier. ``accept(key, header, payload)`` accounts a block:
    (accepted, the op that writes its key if one is queued or new, whether it is new). New ops
    go to ``queue`` in groups of up to ``group_bytes`` (one op may pass it), queued as
    :meth:`WriteBehind.submit` does with ``wait`` and ``whole``; those it has no room for are
    un-accounted (:meth:`Accounts.unaccept`), their staging buffers given back, and refused."""

    def __init__(self, queue: WriteBehind, accounts: Accounts, group_bytes: int,
                 wait: bool = False, whole: bool = True) -> None:
        self._queue, self._acct, self._limit = queue, accounts, group_bytes
        self._wait, self._whole = wait, whole
        self._ops: list[WriteOp] = []
        self._bytes = 0
        self.full = False  # the queue refused a group (a caller may refuse the rest at once)

    def run(self, items: Sequence[tuple[bytes, BlockHeader, Buffer]],
            accept: Accept) -> tuple[list[bool], list[tuple[int, WriteOp]]]:
        """(accepted per item, (index, op) of each accepted item's queued write)."""
        results: list[bool] = []
        waits: list[tuple[int, WriteOp]] = []
        refused: list[WriteOp] = []
        for key, header, payload in items:
            ok, op, new = accept(key, header, payload)
            results.append(ok)
            if op is not None:
                waits.append((len(results) - 1, op))
            if op is not None and new:
                refused += self._add(op)
        refused += self._submit()
        if not refused:
            return results, waits
        keys = self._acct.unaccept(refused)
        return [ok and item[0] not in keys for ok, item in zip(results, items, strict=True)], waits

    def _add(self, op: WriteOp) -> list[WriteOp]:
        """Collect ``op``, queueing the collected ops first if it would pass ``group_bytes``;
        the ops refused."""
        refused = self._submit() if self._ops and self._bytes + op.nbytes > self._limit else []
        self._ops.append(op)
        self._bytes += op.nbytes
        return refused

    def _submit(self) -> list[WriteOp]:
        """Queue the collected ops; those refused."""
        ops, self._ops, self._bytes = self._ops, [], 0
        refused = ops[self._queue.submit(ops, wait=self._wait, whole=self._whole):] if ops else []
        for op in refused:
            self.full = True
            if op.value is not None:
                self._queue.give_back(op.value)
        return refused
