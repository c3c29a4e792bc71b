"""The disk tier's background writer: a bounded queue drained in batched, synced transactions.

``submit`` assigns each :class:`~tiers.lmdb_store.WriteOp` a sequence number and queues it; the
writer thread takes up to ``batch_bytes`` of queued ops at a time and commits them in one LMDB
transaction (``LmdbStore.apply``). Batches are FIFO, so once the op with sequence ``s`` is done,
every op before it is too: ``wait_for(s)`` is how durable puts and ``flush`` wait.

The queue is bounded by ``max_bytes`` of queued values: ``submit`` blocks while it is full (the
disk sets the pace; memory stays bounded). ``latest`` maps each key with queued work to its most
recent op, which is what readers consult before LMDB. After each batch ``on_done(batch)`` runs
under :attr:`lock` (a re-entrant condition shared with the tier) so the tier can account for
failed ops atomically with their removal from ``latest``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from tiers.lmdb_store import LmdbStore, WriteOp

log = logging.getLogger(__name__)
_POLL_S = 1.0  # how often a waiter re-checks that the writer thread is alive


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
        self._next_seq = 0
        self._done_seq = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name=f"disk-writer:{store.path}",
                                        daemon=True)
        self._thread.start()

    @property
    def last_seq(self) -> int:
        """Sequence number of the most recently submitted op (0 = none yet)."""
        return self._next_seq

    def submit(self, op: WriteOp) -> int:
        """Queue ``op`` (waiting for room if the queue is full); returns its sequence number.
        A queued put of the same key that a delete supersedes is cancelled, not written."""
        size = len(op.value) if op.value is not None else 0
        with self.lock:
            while self._queued_bytes and self._queued_bytes + size > self._max_bytes:
                self._wait()
            if self._stopping:
                raise RuntimeError(f"disk tier {self._store.path!r} is closed")
            prior = self.latest.get(op.key)
            if op.value is None and prior is not None and prior.value is not None:
                prior.cancelled = True
            self._next_seq += 1
            op.seq = self._next_seq
            self.latest[op.key] = op
            self._ops.append(op)
            self._queued_bytes += size
            self.lock.notify_all()
            return op.seq

    def wait_for(self, seq: int) -> None:
        """Block until every op up to sequence ``seq`` has been committed (or has failed)."""
        with self.lock:
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
        while True:
            with self.lock:
                while not self._ops and not self._stopping:
                    self.lock.wait()
                if not self._ops:
                    return
                batch = self._take_batch()
            try:
                self._store.apply(batch)
            except Exception:  # a bug must not kill the writer and hang every waiter
                log.exception("disk writer of %s failed a batch", self._store.path)
                for op in batch:
                    op.failed = op.failed or "io"
            with self.lock:
                self._finish(batch)

    def _take_batch(self) -> list[WriteOp]:
        batch = [self._ops.popleft()]
        size = len(batch[0].value or b"")
        while self._ops and len(batch) < self._max_batch_ops:
            nxt = len(self._ops[0].value or b"")
            if size + nxt > self._batch_bytes:
                break
            batch.append(self._ops.popleft())
            size += nxt
        return batch

    def _finish(self, batch: list[WriteOp]) -> None:
        try:
            self._on_done(batch)
        except Exception:
            log.exception("disk tier accounting failed after a batch")
        for op in batch:
            if self.latest.get(op.key) is op:
                del self.latest[op.key]
            self._queued_bytes -= len(op.value) if op.value is not None else 0
        self._done_seq = batch[-1].seq
        self.lock.notify_all()
