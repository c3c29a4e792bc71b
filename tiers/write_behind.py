"""The write-behind queue of the disk and remote tiers: a bounded FIFO of ops, one writer thread.

``submit`` numbers each :class:`WriteOp` and queues it; the writer thread hands up to
``batch_bytes``/``batch_ops`` of them at a time to the tier's *sink*, which writes the batch and
sets ``op.failed`` on ops that did not land (``LmdbStore.apply``: one synced transaction;
``remote_resp.PipelineSink``: one pipelined round). Ops finish in FIFO order: ``wait_for(seq)``.

At most ``max_bytes`` of values are queued. ``submit(whole=True)`` queues a group whole or not at
all (a group always fits an empty queue), with ``wait`` blocking until it fits; ``whole=False``
queues the longest prefix that fits; without ``wait`` nothing blocks (an event loop's case).
Deletes always fit and cancel a queued put of their key. ``urgent=False`` ops (the disk's
deletes) ride in the next urgent batch, ``wait_for`` or close, or go alone after ``_LAZY_S``;
inside :meth:`WriteBehind.producing` the writer waits for a quarter batch, so a large put leaves
in large batches while the tier hands over the rest as it is encoded (``accounts.GroupedPut``).

``latest`` maps each key with queued work to its most recent op; readers consult it under
:attr:`lock` (re-entrant, shared with the tier). ``on_done(batch)`` runs under the lock before
the batch leaves ``latest``, so the tier accounts for failures atomically. A done put's
``bytearray`` is kept for reuse (``take_buffer``) while queued plus idle bytes stay within
``max_bytes``: fresh memory costs a page fault and clear per 4 KiB, more than the copy.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)
_POLL_S = 1.0  # how often a waiter re-checks that the writer thread is alive
_LAZY_S = 0.2  # how long lazily queued ops (deletes) wait for a write to share a batch with


@dataclass(slots=True, eq=False)
class WriteOp:
    """One queued change of ``key``: a put of the encoded value ``head + value`` (its first
    ``header_len`` bytes the header) or, with ``value`` None, a delete. ``value`` is immutable
    ``bytes`` or a staging buffer. The sink sets ``failed`` to an error kind."""

    key: bytes
    value: bytes | bytearray | None = None
    header_len: int = 0
    head: bytes = b""
    seq: int = 0
    cancelled: bool = False
    failed: str | None = None
    scrub: bool = False  # a delete that overwrites the stored value before freeing it (disk)

    @property
    def nbytes(self) -> int:
        """Bytes of the stored value (0 for a delete)."""
        return 0 if self.value is None else len(self.head) + len(self.value)


OnBatch = Callable[[list[WriteOp]], None]  # a sink, or the tier's callback after a batch


class WriteBehind:
    """Bounded queue of write ops and the thread that hands them to ``sink``; ``name`` (e.g.
    ``"the remote tier"``) is used in errors and logs. See the module docstring."""

    def __init__(self, name: str, sink: OnBatch, max_bytes: int, batch_bytes: int,
                 batch_ops: int, on_done: OnBatch) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.latest: dict[bytes, WriteOp] = {}
        self._name, self._sink, self._on_done = name, sink, on_done
        self._max_bytes, self._batch_bytes, self._batch_ops = max_bytes, batch_bytes, batch_ops
        self._ops: deque[WriteOp] = deque()
        self._queued_bytes = 0
        self._idle: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0
        self._next_seq = self._done_seq = 0
        self._urgent_seq = 0  # ops up to this one are wanted now (urgent, or waited for)
        self._lazy_since: float | None = None  # when the oldest queued lazy op was queued
        self._producers = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"writer of {name}", daemon=True)
        self._thread.start()

    @property
    def last_seq(self) -> int:
        """Sequence number of the most recently queued op (0 = none yet)."""
        return self._next_seq

    def submit(self, ops: list[WriteOp], urgent: bool = True, wait: bool = False,
               whole: bool = True) -> int:
        """Queue ``ops`` (all of them, or with ``whole=False`` the longest prefix that fits) and
        return how many were queued; ``wait`` blocks until all fit. ``urgent=False`` lets them
        wait (up to ``_LAZY_S``) for other work to share a batch with."""
        with self.lock:
            while (taken := self._room(ops, whole)) < len(ops) and wait:
                self.lock.wait(_POLL_S)
                if not self._thread.is_alive():
                    raise RuntimeError(f"the writer of {self._name} is not running")
            if self._stopping:
                raise RuntimeError(f"{self._name} is closed")
            for op in ops[:taken]:
                prior = self.latest.get(op.key)
                if op.value is None and prior is not None and prior.value is not None:
                    prior.cancelled = True
                self._next_seq += 1
                op.seq = self._next_seq
                self.latest[op.key] = op
                self._ops.append(op)
                self._queued_bytes += op.nbytes
            if taken and urgent:
                self._urgent_seq = self._next_seq
            elif taken and self._lazy_since is None:
                self._lazy_since = time.monotonic()
            self.lock.notify_all()
            return taken

    def _room(self, ops: list[WriteOp], whole: bool) -> int:
        """How many of ``ops`` fit in the queue now (a prefix; with ``whole``, all or none)."""
        size = taken = 0
        for op in ops:
            size += op.nbytes
            if op.nbytes and self._queued_bytes + size > self._max_bytes:
                break
            taken += 1
        if whole and taken < len(ops):
            return 0 if self._queued_bytes else len(ops)
        return taken

    @contextlib.contextmanager
    def producing(self) -> Iterator[None]:
        """While a caller is inside, the writer waits for a quarter batch (``batch_bytes / 4``,
        or ``batch_ops``) before it writes; leaving releases whatever is queued."""
        with self.lock:
            self._producers += 1
        try:
            yield
        finally:
            with self.lock:
                self._producers -= 1
                self.lock.notify_all()

    def take_buffer(self, nbytes: int) -> bytearray:
        """A staging buffer of exactly ``nbytes`` (recycled if one is idle; contents arbitrary)."""
        with self.lock:
            idle = self._idle.get(nbytes)
            if idle:
                self._idle_bytes -= nbytes
                return idle.pop()
        return bytearray(nbytes)

    def give_back(self, value: bytes | bytearray) -> None:
        """Return a buffer that was not queued (e.g. of a refused put) for reuse."""
        with self.lock:
            self._recycle(value)

    def _recycle(self, value: bytes | bytearray) -> None:
        fits = self._queued_bytes + self._idle_bytes + len(value) <= self._max_bytes
        if isinstance(value, bytearray) and fits:
            self._idle.setdefault(len(value), []).append(value)
            self._idle_bytes += len(value)

    def wait_for(self, seq: int, timeout: float = math.inf) -> bool:
        """Wait until every op up to sequence ``seq`` is done (written or failed); ``False`` if
        ``timeout`` passed first or the writer thread is not running."""
        deadline = time.monotonic() + timeout
        with self.lock:
            if self._urgent_seq < seq:
                self._urgent_seq = seq
                self.lock.notify_all()
            while self._done_seq < seq:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self.lock.wait(min(left, _POLL_S))
        return True

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued (waiting at most ``timeout``), then stop the thread. Idempotent."""
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        self._thread.join(timeout)

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            try:
                self._sink(batch)
            except Exception:  # a bug must not kill the writer and hang every waiter
                log.exception("the writer of %s failed a batch", self._name)
                for op in batch:
                    op.failed = op.failed or "io"
            with self.lock:
                self._finish(batch)

    def _next_batch(self) -> list[WriteOp] | None:
        """Wait for work that is due and take it; None once stopping with nothing left."""
        with self.lock:
            while True:
                if self._ops:
                    left = self._due_in()
                    if left is not None and left <= 0:
                        return self._take_batch()
                    self.lock.wait(left)
                elif self._stopping:
                    return None
                else:
                    self.lock.wait()

    def _due_in(self) -> float | None:
        """Seconds until the queue head is due (<= 0: now, None: when notified); ops queued."""
        if self._stopping:
            return 0.0
        if self._producers and (self._queued_bytes < self._batch_bytes // 4
                                and len(self._ops) < self._batch_ops):
            return None
        if self._ops[0].seq <= self._urgent_seq or self._lazy_since is None:
            return 0.0
        return self._lazy_since + _LAZY_S - time.monotonic()

    def _take_batch(self) -> list[WriteOp]:
        batch = [self._ops.popleft()]
        size = batch[0].nbytes
        while self._ops and len(batch) < self._batch_ops:
            nxt = self._ops[0].nbytes
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
            log.exception("%s: accounting failed after a batch", self._name)
        for op in batch:
            if self.latest.get(op.key) is op:
                del self.latest[op.key]
            if op.value is not None:
                self._queued_bytes -= op.nbytes
                self._recycle(op.value)
        self._done_seq = batch[-1].seq
        self.lock.notify_all()

