"""The REMOTE tier: blocks in a Redis (or Valkey) Cluster, shared by the daemons of many hosts.

Key ``<prefix><32 hex digits of the block key>``, value ``tiers/codec.py``'s header + payload
(the same bytes the disk tier stores). Block keys already separate tenants (``cache_salt`` is in
the namespace), so two salts never meet here either.

* ``put`` encodes the header, keeps the payload (``bytes``, which cannot change) or a copy of it
  (any other buffer) and queues; a background thread sends SETs in pipelined rounds
  (``tiers/write_behind.py`` with ``remote_resp.PipelineSink``). A put is refused (``False``)
  when no node is reachable, when the write queue is full or when it would take this daemon
  past ``capacity_bytes``; a write that fails later is reported by ``take_failed``
  (``tiers/accounts.py``).
* ``get``/``fetch`` send one GET per key, one pipeline per node (``tiers/remote_link.py``). A
  missing key is a miss; a timeout, a dead node, a redirection or a value that fails any codec
  check (magic, version, header digest, length, checksum) is a miss *and* a counted error; a
  corrupt value is also deleted. Bytes are never returned unverified.
* ``contains`` asks the cluster (``EXISTS``): other hosts' blocks are found there too.
* ``used_bytes``/``len`` count what *this* tier stored and has not deleted, plus blocks it
  ``adopt``-ed (found in the cluster, stored by another host: deleting those only forgets
  them); the cluster may drop blocks on its own (TTL, ``maxmemory-policy``), which then surface
  as misses.

The tier starts without its cluster (``ready`` is False, puts are refused, reads miss) and picks
it up when it answers. Its load cost (:meth:`RemoteTier.load_figures`) is configured, or measured
on each connect and refined from large reads (``tiers/remote_probe.py``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence

from asymcache.tiers.accounts import Accounts, GroupedPut
from asymcache.tiers.base import (
    KEY_BYTES,
    BlockHeader,
    Buffer,
    Tier,
    check_key,
    checksum,
    register_tier,
)
from asymcache.tiers.codec import (
    CorruptValue,
    decode_header,
    decode_value,
    encode_header,
    value_bytes,
)
from asymcache.tiers.remote_config import RemoteTierConfig
from asymcache.tiers.remote_link import ClusterLink
from asymcache.tiers.remote_probe import LinkFigures, scan_headers
from asymcache.tiers.remote_resp import BatchObserver, PipelineSink, error_kind
from asymcache.tiers.write_behind import WriteBehind, WriteOp

log = logging.getLogger(__name__)
_KEY_OVERHEAD = 64  # a Redis key's dict entry and object headers, roughly
_TYPICAL_HEADER = 168  # encoded header with a ~90-byte layout text
_PURGE_CHUNK = 512  # DELs per pipeline of a purge
Found = tuple[BlockHeader, memoryview]


@register_tier("remote")
class RemoteTier(Tier):
    """Redis Cluster tier; see the module docstring. ``observe(op, seconds, nbytes)`` (optional)
    is called after every pipelined round (``get``, ``exists``, ``write``), from the calling
    thread or the writer thread."""

    def __init__(self, config: RemoteTierConfig, observe: BatchObserver | None = None) -> None:
        if not isinstance(config, RemoteTierConfig):
            raise ValueError(f"RemoteTier needs a RemoteTierConfig, got {type(config).__name__}")
        self.config = config
        self._prefix = config.prefix.encode("utf-8")
        self._key_overhead = len(self._prefix) + 2 * KEY_BYTES + _KEY_OVERHEAD
        self._observe = observe
        self.figures = LinkFigures(config)
        self._link = ClusterLink(config, on_connect=self.figures.measure,
                                 on_idle=self.figures.complete)
        sink = PipelineSink(self._link.execute, self.redis_key, config.ttl_ms, observe)
        self._writer = WriteBehind("the remote tier", sink, config.queue_bytes, config.batch_bytes,
                                   config.batch_ops, self._on_done)
        self._lock = self._writer.lock
        self._acct = Accounts(config.capacity_bytes, self._lock)
        self._closed = False

    # -- sizes and state --------------------------------------------------------------------
    def redis_key(self, key: bytes) -> bytes:
        """The cluster key of block ``key``."""
        return self._prefix + key.hex().encode("ascii")

    def entry_bytes(self, header: BlockHeader) -> int:
        return value_bytes(header) + self._key_overhead

    @property
    def capacity_bytes(self) -> int:
        return self.config.capacity_bytes

    @property
    def used_bytes(self) -> int:
        return self._acct.used

    @property
    def capacity_blocks(self) -> int:
        return self.capacity_bytes // (_TYPICAL_HEADER + self.config.block_bytes
                                       + self._key_overhead)

    @property
    def ready(self) -> bool:
        """Whether at least one node of the cluster is reachable now."""
        return self._link.ready

    @property
    def link(self) -> ClusterLink:
        return self._link

    def __len__(self) -> int:
        return len(self._acct.sizes)

    def load_figures(self) -> tuple[float, float] | None:
        """``(latency_s, bandwidth_bps)`` of a load from this tier, or None until measured."""
        return self.figures.current()

    def stats(self) -> dict[str, int]:
        """Counters so far: ``hits``, ``misses``, ``read_bytes``, ``written_bytes``,
        ``write_failures``, ``put_refused``."""
        return self._acct.stats()

    # -- writes -----------------------------------------------------------------------------
    def put(self, items: Sequence[tuple[bytes, BlockHeader, Buffer]],
            durable: bool = False) -> list[bool]:
        """Queue each block for the cluster; ``False`` = refused (see the module docstring).
        A payload that is not ``bytes`` is copied, so the caller may reuse its buffer at once;
        ``bytes`` are kept as they are. Blocks go to the writer in groups while the rest are
        encoded, and leave in full pipelines. ``durable=True`` waits (at most
        ``durable_timeout_s``) until the writes are acknowledged and reports failed ones as
        ``False``."""
        self._check_open()
        group = GroupedPut(self._writer, self._acct, self.config.batch_bytes // 4, whole=False)
        ready = self._link.ready
        with self._writer.producing():
            results, waits = group.run(items, lambda key, header, payload: self._accept(
                key, header, payload, ready and not group.full))
        if durable and waits:
            self._wait_durable(results, waits)
        return results

    def _accept(self, key: bytes, header: BlockHeader, payload: Buffer,
                room: bool) -> tuple[bool, WriteOp | None, bool]:
        """(accepted, the op that writes the key if one is queued or new, whether it is new).
        ``room`` False = refuse new blocks (no node reachable, or the queue is full)."""
        view = memoryview(payload).cast("B")
        if view.nbytes != header.length:
            raise ValueError(f"payload of block {check_key(key).hex()} is {view.nbytes} bytes "
                             f"but header.length is {header.length}")
        if check_key(key) in self._acct:
            with self._lock:
                return True, self._writer.latest.get(key), False
        if not room:
            return self._acct.refused("unavailable" if not self._link.ready else "queue_full"), \
                None, False
        held = self._hold(payload, view)
        digest = checksum(held)  # of the bytes that will be sent, not of a buffer that may change
        if header.checksum != digest:
            if header.checksum:
                return self._acct.refused("put_checksum"), None, False
            header = BlockHeader(header.namespace, header.parent, header.position, header.layout,
                                 header.length, digest)
        head = encode_header(header, key)
        if not self._acct.take(key, len(head) + view.nbytes + self._key_overhead):
            return self._acct.refused(None), None, False
        return True, WriteOp(key, held, len(head), head), True

    def _hold(self, payload: Buffer, view: memoryview) -> bytes | bytearray:
        """``payload`` itself if it is immutable ``bytes``, else a private copy of it."""
        if type(payload) is bytes:
            return payload
        copy = self._writer.take_buffer(view.nbytes)
        with memoryview(copy) as dest:
            dest[:] = view
        return copy

    def _wait_durable(self, results: list[bool], waits: list[tuple[int, WriteOp]]) -> None:
        if not self._writer.wait_for(max(op.seq for _, op in waits),
                                     self.config.durable_timeout_s):
            self._acct.count("timeout")
        with self._lock:
            latest = self._writer.latest
            for index, op in waits:
                if op.failed is not None or latest.get(op.key) is op:
                    results[index] = False

    def adopt(self, items: Sequence[tuple[bytes, BlockHeader]]) -> list[bool]:
        """Account blocks found in the cluster (stored by another host) without writing them,
        so this daemon can track and bound them; ``False`` = over capacity (not accounted)."""
        self._check_open()
        return [self._acct.take(check_key(key), self.entry_bytes(header), adopted=True)
                for key, header in items]

    def delete(self, keys: Sequence[bytes]) -> int:
        """Forget the keys at once and queue a DEL for each, except adopted blocks (another
        host's: only forgotten); returns how many accounted blocks it removed."""
        self._check_open()
        removed = 0
        doomed = []
        for key in dict.fromkeys(keys):
            held, stored = self._acct.forget(check_key(key))
            removed += held
            if stored:
                doomed.append(WriteOp(key))
        if doomed:
            self._writer.submit(doomed)
        return removed

    def _on_done(self, batch: list[WriteOp]) -> None:
        """Writer callback (under the lock): count writes, un-account those that did not land."""
        for op in batch:
            if op.value is not None and not op.cancelled:
                if op.failed is None:
                    self._acct.event("written_bytes", op.nbytes)
                else:
                    self._acct.event("write_failures")
        self._acct.settle(batch, self._writer.latest)

    def flush(self) -> None:
        """Wait (at most ``durable_timeout_s``) until every queued write is sent."""
        self._check_open()
        if not self._writer.wait_for(self._writer.last_seq, self.config.durable_timeout_s):
            self._acct.count("timeout")

    def close(self) -> None:
        """Send queued writes (bounded), stop the threads, close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._writer.close(self.config.durable_timeout_s)
        self._link.close()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the remote tier is closed")

    # -- reads ------------------------------------------------------------------------------
    def get(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        """A verified payload (``memoryview`` of a private ``bytes``) per key, or ``None``."""
        return [None if found is None else found[1] for found in self.fetch(keys)]

    def fetch(self, keys: Sequence[bytes]) -> list[Found | None]:
        """``(header, payload)`` of each block, verified, or ``None`` for a miss; one GET
        pipeline per node. Corrupt values are counted by kind and deleted."""
        self._check_open()
        out: list[Found | None] = [None] * len(keys)
        pending = self._from_queue(keys, out)
        if pending:
            rkeys = [self.redis_key(keys[i]) for i in pending]
            start = time.perf_counter()
            replies = self._link.execute([(rk, ("GET", rk)) for rk in rkeys])
            seconds = time.perf_counter() - start
            nbytes = sum(len(r) for r in replies if isinstance(r, bytes))
            self.figures.observe(seconds, nbytes)
            if self._observe is not None:
                self._observe("get", seconds, nbytes)
            for i, reply in zip(pending, replies, strict=True):
                out[i] = self._decode(keys[i], reply)
        hits = sum(found is not None for found in out)
        self._acct.event("hits", hits)
        self._acct.event("misses", len(keys) - hits)
        self._acct.event("read_bytes", sum(f[1].nbytes for f in out if f is not None))
        return out

    def _from_queue(self, keys: Sequence[bytes], out: list[Found | None]) -> list[int]:
        """Serve keys with a queued SET from the queue (a copy); the indexes left to fetch."""
        pending = []
        with self._lock:
            latest = self._writer.latest
            for i, key in enumerate(keys):
                op = latest.get(key)
                if op is None:
                    pending.append(i)
                elif op.value is not None:
                    payload = op.value if type(op.value) is bytes else bytes(op.value)
                    out[i] = decode_header(op.head)[0], memoryview(payload)
        return pending

    def _decode(self, key: bytes, reply: object) -> Found | None:
        if reply is None:
            return None
        if isinstance(reply, Exception):
            self._acct.count(error_kind(reply))
            return None
        try:
            return decode_value(reply, key=key)  # type: ignore[arg-type]
        except CorruptValue as exc:
            log.warning("remote tier: block %s is corrupt (%s); deleted", key.hex(), exc.kind)
            self._acct.count(exc.kind)
            self._acct.forget(key, lost=True)
            self._writer.submit([WriteOp(key)])
            return None

    def contains(self, keys: Sequence[bytes]) -> list[bool]:
        """Whether each key is in the cluster (or queued here); one EXISTS pipeline per node.
        A key on an unreachable node is reported absent (and the error counted)."""
        self._check_open()
        out = [False] * len(keys)
        pending = []
        with self._lock:  # queued here: a SET is held, a DEL is gone
            latest = self._writer.latest
            for i, key in enumerate(keys):
                op = latest.get(key)
                if op is None:
                    pending.append(i)
                else:
                    out[i] = op.value is not None
        if pending:
            rkeys = [self.redis_key(keys[i]) for i in pending]
            start = time.perf_counter()
            replies = self._link.execute([(rk, ("EXISTS", rk)) for rk in rkeys])
            if self._observe is not None:
                self._observe("exists", time.perf_counter() - start, 0)
            for i, reply in zip(pending, replies, strict=True):
                if isinstance(reply, Exception):
                    self._acct.count(error_kind(reply))
                else:
                    out[i] = reply == 1
        return out

    def headers(self) -> Iterator[tuple[bytes, BlockHeader]]:
        """Every block under this prefix in the cluster (all hosts' blocks; SCAN on each
        reachable primary, headers read with GETRANGE). Corrupt headers are counted and
        skipped. Not used at daemon start: the cluster is discovered by lookups."""
        return scan_headers(self._link, self._prefix, self._acct.count)

    def purge(self, namespaces: set[bytes]) -> list[bytes]:
        """Delete every block of ``namespaces`` from the cluster, whichever host stored it:
        SCAN every primary, read the headers, DEL the matches (one pipeline per node and
        ``_PURGE_CHUNK`` keys); this tier's own queued writes of them are cancelled. The keys
        found and deleted. Blocking (the daemon runs it in a worker thread); unreachable nodes
        are skipped and counted, so a purge run while a node is down misses that node's
        blocks."""
        self._check_open()
        if not namespaces or not self.ready:
            return []
        doomed = [key for key, header in self.headers() if header.namespace in namespaces]
        self.delete(doomed)  # ours: forgotten, and DELs queued after any queued SET
        deleted = []
        for start in range(0, len(doomed), _PURGE_CHUNK):
            chunk = doomed[start:start + _PURGE_CHUNK]
            rkeys = [self.redis_key(k) for k in chunk]
            replies = self._link.execute([(rk, ("DEL", rk)) for rk in rkeys])
            for key, reply in zip(chunk, replies, strict=True):
                if isinstance(reply, Exception):
                    self._acct.count(error_kind(reply))
                else:  # 0: our own queued DEL was first
                    deleted.append(key)
        return deleted

    def take_failed(self) -> list[bytes]:
        return self._acct.take_failed()

    def count_error(self, kind: str) -> None:
        """Count an error its caller found in a block this tier returned (e.g. ``mismatch``:
        intact bytes of another layout under the key)."""
        self._acct.count(kind)

    def error_counts(self) -> dict[str, int]:
        return self._acct.errors()
