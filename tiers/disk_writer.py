"""The disk tier's background writer: a bounded queue drained in batched, synced transactions.

``submit`` assigns each :class:`~tiers.lmdb_store.WriteOp` a sequence number and queues it; the
writer thread takes up to ``batch_bytes`` of queued ops at a time and commits them in one LMDB
transaction (``LmdbStore.apply``). Callers submit ops in groups of up to ``batch_bytes``, so the
writer commits full batches (one sync each) while the caller encodes the next group. Batches are
FIFO: once the op with sequence ``s`` is done, every op before it is too, which is how durable
puts and ``flush`` wait (``wait_for``).

Deletes are queued *lazily* (``submit(..., urgent=False)``): they do not wake the writer, but
ride in the transaction of the next write, ``flush`` or ``wait_for``, or are committed on their
own after ``_LAZY_S``. An eviction followed by the write it makes room for thus costs one synced
commit, not two.

The queue is bounded by ``max_bytes`` of queued values. When it is full, ``submit(...,
wait=False)`` refuses (returns ``None``, nothing queued): that is what the daemon's event loop
uses, which must never block on the disk; ``wait=True`` (a caller off the loop that will wait
for the sync anyway) blocks until there is room, so the disk sets the pace. Either way memory
stays bounded. Deletes carry no value and are always queued at once. ``latest`` maps each key
with queued work to its most recent op, which is what readers consult before LMDB. After each
batch ``on_done(batch)`` runs under :attr:`lock` (a re-entrant condition shared with the tier)
so the tier can account for failed ops atomically with their removal from ``latest``.

Staging buffers: the buffer of a committed put is kept for reuse (``take_buffer``) as long as
queued plus idle buffers stay within ``max_bytes``. Fresh memory costs a page fault and a page
clear per 4 KiB, several times the cost of the copy itself, so recycling buffers of the
(usually single) block size is what makes the copy into a staging buffer cheap. A buffer is
recycled only once its op has left ``latest``; callers read queued values under :attr:`lock`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from asymcache.tiers.lmdb_store import LmdbStore, WriteOp

log = logging.getLogger(__name__)
_POLL_S = 1.0  # how often a waiter re-checks that the writer thread is alive
_LAZY_S = 0.2  # how long lazily queued ops (deletes) wait for a write to share a commit with


class WriteQueue:
    """Bounded FIFO of write ops and the thread that commits them. See the module docstring."""

    def __init__(self, store: LmdbStore, max_bytes: int, batch_bytes: int, max_batch_ops: int,
                 on_done: Callable[[list[WriteOp]], None]) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.latest: dict[bytes, WriteOp] = {}
        self._store = store
        self._max_bytes = max_bytes
        self._batch_bytes = batch_bytes
        self._max_batch_ops = max_batch_ops
        self._on_done = on_done
        self._ops: deque[WriteOp] = deque()
        self._queued_bytes = 0
        self._idle: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0
        self._next_seq = 0
        self._done_seq = 0
        self._urgent_seq = 0  # ops up to this one are wanted now (a put, flush or wait_for)
        self._lazy_since: float | None = None  # when the oldest queued lazy op was queued
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"disk-writer:{store.path}",
                                        daemon=True)
        self._thread.start()

    @property
    def last_seq(self) -> int:
        """Sequence number of the most recently submitted op (0 = none yet)."""
        return self._next_seq

    def submit(self, ops: list[WriteOp], urgent: bool = True, wait: bool = True) -> int | None:
        """Queue ``ops`` together, so the writer can commit them in one transaction; returns
        the sequence number of the last one. If their values do not fit in the queue now,
        ``wait`` blocks until they do, else nothing is queued and the result is ``None`` (a
        group always fits an empty queue). A queued put of a key that a later delete supersedes
        is cancelled, not written. ``urgent=False`` lets them wait (up to ``_LAZY_S``) for
        other work to share a commit with."""
        size = sum(len(op.value) for op in ops if op.value is not None)
        with self.lock:
            while size and self._queued_bytes and self._queued_bytes + size > self._max_bytes:
                if not wait:
                    return None
                self._wait()
            if self._stopping:
                raise RuntimeError(f"disk tier {self._store.path!r} is closed")
            for op in ops:
                prior = self.latest.get(op.key)
                if op.value is None and prior is not None and prior.value is not None:
                    prior.cancelled = True
                self._next_seq += 1
                op.seq = self._next_seq
                self.latest[op.key] = op
            self._ops.extend(ops)
            self._queued_bytes += size
            if urgent:
                self._urgent_seq = self._next_seq
            elif self._lazy_since is None:
                self._lazy_since = time.monotonic()
            self.lock.notify_all()
            return self._next_seq

    def take_buffer(self, nbytes: int) -> bytearray:
        """A staging buffer of exactly ``nbytes`` (recycled if one is idle; contents arbitrary)."""
        with self.lock:
            idle = self._idle.get(nbytes)
            if idle:
                self._idle_bytes -= nbytes
                return idle.pop()
        return bytearray(nbytes)

    def give_back(self, value: bytearray) -> None:
        """Return an unused buffer from :meth:`take_buffer` (e.g. of a refused put)."""
        with self.lock:
            self._recycle(value)

    def _recycle(self, value: bytearray) -> None:
        if self._queued_bytes + self._idle_bytes + len(value) <= self._max_bytes:
            self._idle.setdefault(len(value), []).append(value)
            self._idle_bytes += len(value)

    def wait_for(self, seq: int) -> None:
        """Block until every op up to sequence ``seq`` has been committed (or has failed)."""
        with self.lock:
            if self._urgent_seq < seq:
                self._urgent_seq = seq
                self.lock.notify_all()
            while self._done_seq < seq:
                self._wait()

    def _wait(self) -> None:
        self.lock.wait(_POLL_S)
        if not self._thread.is_alive():
            raise RuntimeError(f"disk writer of {self._store.path!r} is not running")

    def close(self) -> None:
        """Drain the queue, then stop the thread. Idempotent."""
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        self._thread.join()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._store.apply(batch)
            except Exception:  # a bug must not kill the writer and hang every waiter
                log.exception("disk writer of %s failed a batch", self._store.path)
                for op in batch:
                    op.failed = op.failed or "io"
            with self.lock:
                self._finish(batch)

    def _next_batch(self) -> list[WriteOp] | None:
        """Wait for work that is due and take it; None once stopping with nothing left."""
        with self.lock:
            while True:
                if self._ops:
                    left = self._lazy_left()
                    if left <= 0:
                        return self._take_batch()
                    self.lock.wait(left)
                elif self._stopping:
                    return None
                else:
                    self.lock.wait()

    def _lazy_left(self) -> float:
        """Seconds until the queue head is due (<= 0: now); call with ops queued."""
        if self._stopping or self._ops[0].seq <= self._urgent_seq or self._lazy_since is None:
            return 0.0
        return self._lazy_since + _LAZY_S - time.monotonic()

    def _take_batch(self) -> list[WriteOp]:
        batch = [self._ops.popleft()]
        size = len(batch[0].value or b"")
        while self._ops and len(batch) < self._max_batch_ops:
            nxt = len(self._ops[0].value or b"")
            if size + nxt > self._batch_bytes:
                break
            batch.append(self._ops.popleft())
            size += nxt
        self._lazy_since = time.monotonic() if self._ops else None
        return batch

    def _finish(self, batch: list[WriteOp]) -> None:
        try:
            self._on_done(batch)
        except Exception:
            log.exception("disk tier accounting failed after a batch")
        for op in batch:
            if self.latest.get(op.key) is op:
                del self.latest[op.key]
            if op.value is not None:
                self._queued_bytes -= len(op.value)
                self._recycle(op.value)
        self._done_seq = batch[-1].seq
        self.lock.notify_all()


class GroupSubmitter:
    """Collects new ops and submits them to ``queue`` in groups of up to ``group_bytes``, so the
    writer commits one full batch while the caller prepares the next; ``close`` submits the
    rest. Each op's ``seq`` is set when its group is queued; with ``wait=False`` the groups a
    full queue refused are collected in :attr:`refused` (their ops were not queued)."""

    def __init__(self, queue: WriteQueue, group_bytes: int, wait: bool = True) -> None:
        self._queue = queue
        self._limit = group_bytes
        self._wait = wait
        self._ops: list[WriteOp] = []
        self._bytes = 0
        self.refused: list[WriteOp] = []

    def add(self, op: WriteOp) -> None:
        size = len(op.value) if op.value is not None else 0
        if self._ops and self._bytes + size > self._limit:
            self.close()
        self._ops.append(op)
        self._bytes += size

    def close(self) -> None:
        if self._ops and self._queue.submit(self._ops, wait=self._wait) is None:
            self.refused.extend(self._ops)
        self._ops, self._bytes = [], 0
