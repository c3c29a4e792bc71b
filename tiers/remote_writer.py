"""The remote tier's background writer: a bounded FIFO of SET/DEL ops sent in pipelined rounds.

``submit_prefix`` queues ops without blocking: if the queue already holds ``max_bytes`` of values it
refuses them (the caller's ``put`` returns ``False``), so a slow or absent cluster never stalls
the daemon. The writer thread takes up to ``batch_bytes``/``batch_ops`` of queued ops at a time
and runs them as one :meth:`ClusterLink.execute` (one pipeline per node, written to every node
before any reply is read). Ops finish in FIFO order; :meth:`wait_for` waits, bounded, until the
op with a given sequence number is done.

``latest`` maps each key with queued work to its most recent op; readers consult it (under
:attr:`lock`) before the cluster, so a block is readable from the moment ``put`` accepted it.
After each round ``on_done(batch)`` runs under the lock, before the ops leave ``latest``, so the
tier can un-account failed writes atomically. A queued SET that a later DEL supersedes is
cancelled (never sent).

A SET is sent as its encoded header followed by the payload, as separate pieces of one bulk
string (``set_command``): the stored value is exactly ``tiers/codec.py``'s ``encode_value``, but
an immutable payload (``bytes``) is sent without being copied. Mutable payloads are copied into
staging buffers, which are kept for reuse (``take_buffer``) while queued plus idle bytes stay
within ``max_bytes``: fresh memory costs a page fault per 4 KiB, more than the copy.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from asymcache.tiers.remote_link import ClusterLink
from asymcache.tiers.remote_resp import RawCommand, error_kind, set_command

log = logging.getLogger(__name__)
BatchObserver = Callable[[str, float, int], None]  # (op name, seconds, bytes)


@dataclass(slots=True, eq=False)
class RemoteOp:
    """One queued write: a SET of ``head`` (encoded header) + ``payload``, or with both
    ``None`` a DEL of the key. ``payload`` is immutable ``bytes`` or a private staging copy."""

    key: bytes
    head: bytes | None = None
    payload: bytes | bytearray | None = None
    seq: int = 0
    failed: str | None = None
    cancelled: bool = False

    @property
    def is_set(self) -> bool:
        return self.head is not None

    @property
    def nbytes(self) -> int:
        """Bytes of the stored value (0 for a DEL)."""
        return 0 if self.head is None else len(self.head) + len(self.payload or b"")


class RemoteWriter:
    """Bounded queue of remote writes and the thread that sends them (module docstring)."""

    def __init__(self, link: ClusterLink, redis_key: Callable[[bytes], bytes], ttl_ms: int,
                 max_bytes: int, batch_bytes: int, batch_ops: int,
                 on_done: Callable[[list[RemoteOp]], None],
                 observe: BatchObserver | None = None) -> None:
        self.lock = threading.Condition(threading.RLock())
        self.latest: dict[bytes, RemoteOp] = {}
        self._link = link
        self._redis_key = redis_key
        self._ttl_ms = ttl_ms
        self._max_bytes, self._batch_bytes, self._batch_ops = max_bytes, batch_bytes, batch_ops
        self._on_done = on_done
        self._observe = observe
        self._ops: deque[RemoteOp] = deque()
        self._queued_bytes = 0
        self._idle: dict[int, list[bytearray]] = {}
        self._idle_bytes = 0
        self._next_seq = 0
        self._done_seq = 0
        self._producers = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="remote-writer", daemon=True)
        self._thread.start()

    @property
    def last_seq(self) -> int:
        """Sequence number of the most recently queued op (0 = none yet)."""
        return self._next_seq

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    def submit_prefix(self, ops: list[RemoteOp]) -> int:
        """Queue the longest prefix of ``ops`` whose values fit in the queue; how many it took.
        Deletes (no value) always fit."""
        with self.lock:
            if self._stopping:
                raise RuntimeError("the remote tier is closed")
            size = taken = 0
            for op in ops:
                need = op.nbytes
                if need and self._queued_bytes + size + need > self._max_bytes:
                    break
                size += need
                taken += 1
            for op in ops[:taken]:
                prior = self.latest.get(op.key)
                if not op.is_set and prior is not None and prior.is_set:
                    prior.cancelled = True
                self._next_seq += 1
                op.seq = self._next_seq
                self.latest[op.key] = op
            self._ops.extend(ops[:taken])
            self._queued_bytes += size
            self.lock.notify_all()
            return taken

    @contextlib.contextmanager
    def producing(self) -> Iterator[None]:
        """While a caller is inside, the writer waits for a quarter batch (``batch_bytes / 4``,
        or ``batch_ops``) before it sends, so one ``put`` of many blocks goes out in large
        pipelines while the rest are encoded; leaving releases whatever is queued."""
        with self.lock:
            self._producers += 1
        try:
            yield
        finally:
            with self.lock:
                self._producers -= 1
                self.lock.notify_all()

    def _batch_ready(self) -> bool:
        if not self._ops:
            return False
        full = self._queued_bytes >= self._batch_bytes // 4 or len(self._ops) >= self._batch_ops
        return full or not self._producers or self._stopping

    def take_buffer(self, nbytes: int) -> bytearray:
        """A staging buffer of exactly ``nbytes`` (recycled if one is idle; contents arbitrary)."""
        with self.lock:
            idle = self._idle.get(nbytes)
            if idle:
                self._idle_bytes -= nbytes
                return idle.pop()
        return bytearray(nbytes)

    def wait_for(self, seq: int, timeout: float) -> bool:
        """Wait until every op up to ``seq`` is done; ``False`` if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self._done_seq < seq:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self.lock.wait(left)
        return True

    def close(self, timeout: float) -> None:
        """Send what is queued (bounded by ``timeout``), then stop the thread. Idempotent."""
        with self.lock:
            self._stopping = True
            self.lock.notify_all()
        self._thread.join(timeout)

    # -- the writer thread ------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self.lock:
                while not self._batch_ready() and not (self._stopping and not self._ops):
                    self.lock.wait()
                if not self._ops:
                    return
                batch = self._take_batch()
            try:
                self._send(batch)
            except Exception:  # a bug must not kill the writer and hang every waiter
                log.exception("remote writer failed a batch")
                for op in batch:
                    op.failed = op.failed or "io"
            with self.lock:
                self._finish(batch)

    def _take_batch(self) -> list[RemoteOp]:
        batch = [self._ops.popleft()]
        size = batch[0].nbytes
        while self._ops and len(batch) < self._batch_ops:
            nxt = self._ops[0].nbytes
            if size + nxt > self._batch_bytes:
                break
            batch.append(self._ops.popleft())
            size += nxt
        return batch

    def _send(self, batch: list[RemoteOp]) -> None:
        live = [op for op in batch if not op.cancelled]
        commands: list[tuple[bytes, tuple | RawCommand]] = []
        for op in live:
            rkey = self._redis_key(op.key)
            if op.head is None or op.payload is None:
                commands.append((rkey, ("DEL", rkey)))
            else:
                commands.append((rkey, set_command(rkey, op.head, op.payload, self._ttl_ms)))
        start = time.perf_counter()
        replies = self._link.execute(commands)
        seconds = time.perf_counter() - start
        for op, reply in zip(live, replies, strict=True):
            if isinstance(reply, Exception):
                op.failed = error_kind(reply)
        if self._observe is not None and live:
            self._observe("write", seconds, sum(op.nbytes for op in live))

    def _finish(self, batch: list[RemoteOp]) -> None:
        try:
            self._on_done(batch)
        except Exception:
            log.exception("remote tier accounting failed after a batch")
        for op in batch:
            if self.latest.get(op.key) is op:
                del self.latest[op.key]
            self._queued_bytes -= op.nbytes
            buf = op.payload
            if isinstance(buf, bytearray) and (self._queued_bytes + self._idle_bytes + len(buf)
                                               <= self._max_bytes):
                self._idle.setdefault(len(buf), []).append(buf)
                self._idle_bytes += len(buf)
        self._done_seq = batch[-1].seq
        self.lock.notify_all()


class PutGroup:
    """The new writes of one ``put``, handed to ``writer`` every ``group_bytes`` so it sends
    while the rest are encoded. A write the queue has no room for is passed to ``refuse(index,
    op)`` and ``full`` turns True (the caller then refuses the rest before encoding them);
    ``taken`` lists ``(index, op)`` of the queued ones."""

    def __init__(self, writer: RemoteWriter, group_bytes: int,
                 refuse: Callable[[int, RemoteOp], None]) -> None:
        self._writer = writer
        self._limit = max(1, group_bytes)
        self._refuse = refuse
        self._ops: list[tuple[int, RemoteOp]] = []
        self._bytes = 0
        self.full = False
        self.taken: list[tuple[int, RemoteOp]] = []

    def add(self, index: int, op: RemoteOp) -> None:
        self._ops.append((index, op))
        self._bytes += op.nbytes
        if self._bytes >= self._limit:
            self.submit()

    def submit(self) -> None:
        if not self._ops:
            return
        taken = self._writer.submit_prefix([op for _, op in self._ops])
        for index, op in self._ops[taken:]:
            self._refuse(index, op)
            self.full = True
        self.taken += self._ops[:taken]
        self._ops, self._bytes = [], 0
