"""The DISK tier: blocks in LMDB, written in batches by a background thread, checksummed.

Each stored value is ``tiers/codec.py``'s header + payload; a copy of the header sits in a
separate LMDB database so :meth:`DiskTier.headers` (the daemon's index rebuild at start) reads
only a compact B-tree. See ``tiers/lmdb_store.py`` for the environment and
``tiers/write_behind.py`` for the write queue and ``tiers/accounts.py`` for the
accounting.

Accounting: the tier keeps key → bytes occupied for every held block (committed or queued) in
memory; ``contains``/``len``/``used_bytes`` answer from it. A block occupies its value rounded
up to LMDB pages (twice its size if small enough to sit in a B-tree leaf) plus a fixed index
overhead (:meth:`DiskTier.entry_bytes`). ``put`` refuses
what would take ``used_bytes`` past ``capacity_bytes``; the LMDB map is larger than the capacity
(``DiskTierConfig.map_size``) so that fragmentation and copy-on-write never fill it in normal
operation, and if it fills anyway (or the file system does) the failed writes are refused,
counted as ``full`` and reported by :meth:`DiskTier.take_failed`.

Reads check magic, version, header digest, block key, length and checksum; any mismatch is a
miss, counted by kind, and the corrupt entry is deleted (and reported by ``take_failed``): a
value stored under another key is kind ``key``, one of format version 1 (written before values
carried their key) kind ``version``, dropped at the first start of this build (the index
rebuild) or on read. Version 1 values are not migrated: nothing in them ties the bytes to the
block they are stored under, and a cache may recompute what it cannot prove. Reads of blocks
still in the write queue are served from the queue.

A damaged environment (``tiers/lmdb_store.py``: LMDB reports corruption, the file is not LMDB,
another format tag, or the damage marker of an earlier process) is moved aside at open to
``<path>.damaged-<time>`` and the tier starts empty: logged, counted once as ``damaged_file``
(``error_counts``), and :attr:`DiskTier.damaged_dir` names the copy. Damage found while running
(a read or the index rebuild) is counted the same way and stops writes; the next start moves the
directory aside.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence

import lmdb

from asymcache.tiers.accounts import Accounts, GroupedPut
from asymcache.tiers.base import BlockHeader, Buffer, Tier, check_key, checksum, register_tier
from asymcache.tiers.codec import (
    CorruptValue,
    decode_header,
    decode_value,
    stage_value,
    value_bytes,
)
from asymcache.tiers.disk_config import DiskTierConfig, MiB
from asymcache.tiers.lmdb_store import DAMAGE_ERRORS, DamagedStore, LmdbStore, move_aside
from asymcache.tiers.write_behind import WriteBehind, WriteOp

log = logging.getLogger(__name__)
_UNDELETED_MAX = 1 << 16  # failed deletes kept to send again (a full disk)
_LMDB_PAGE_HEADER = 16
_LEAF_NODE = 24  # LMDB node header + 16-byte key
_INDEX_OVERHEAD = 256  # two B-tree leaf nodes per block (data + headers), rounded up
_TYPICAL_HEADER = 168  # encoded header with a ~90-byte layout text


@register_tier("disk")
class DiskTier(Tier):
    """LMDB-backed tier; see the module docstring. Survives restarts: open it on the same
    ``path`` and :meth:`headers` lists what a previous process stored durably."""

    def __init__(self, path: str, capacity_bytes: int, block_bytes: int = 0,
                 map_bytes: int | None = None, writemap: bool = False,
                 queue_bytes: int = 256 * MiB, batch_bytes: int = 64 * MiB,
                 batch_ops: int = 4096) -> None:
        self.config = DiskTierConfig(path, capacity_bytes, block_bytes, map_bytes,
                                     writemap, queue_bytes, batch_bytes, batch_ops)
        self.damaged_dir: str | None = None  # where a damaged environment was moved at open
        self._store = self._open_store()
        self._page = self._store.page_bytes
        try:
            sizes = self._load_sizes()
        except lmdb.Error:
            self._store.close()
            raise
        self._queue = WriteBehind(f"disk tier {path!r}", self._store.apply, queue_bytes,
                                  batch_bytes, batch_ops, self._on_done)
        self._lock = self._queue.lock
        self._acct = Accounts(capacity_bytes, self._lock, sizes)
        if self.damaged_dir is not None:
            self._acct.count("damaged_file")
        self._closed = False
        self._undeleted: dict[bytes, bool] = {}  # deletes that failed: key -> scrub
        self.retried_deletes = 0
        if self._acct.used > capacity_bytes:
            log.warning("disk tier %s holds %d bytes, over its capacity %d: evict before putting",
                        path, self._acct.used, capacity_bytes)

    def _open_store(self) -> LmdbStore:
        """The environment at the configured path; a damaged one is moved aside (logged) and
        an empty one opened in its place, so a bad file never keeps the daemon from starting."""
        cfg = self.config
        try:
            return LmdbStore(cfg.path, cfg.map_size, cfg.writemap, cfg.batch_bytes)
        except DamagedStore as exc:
            self.damaged_dir = move_aside(cfg.path)
            log.error("%s; moved it to %s and starting with an empty disk tier (delete that "
                      "directory once inspected)", exc, self.damaged_dir)
        return LmdbStore(cfg.path, cfg.map_size, cfg.writemap, cfg.batch_bytes)

    # -- sizes ------------------------------------------------------------------------------
    def _load_sizes(self) -> dict[bytes, int]:
        """key → footprint of every stored block (few distinct value lengths: memoized)."""
        known: dict[int, int] = {}
        sizes: dict[bytes, int] = {}
        for key, n in self._store.sizes():
            size = known.get(n)
            if size is None:
                size = known[n] = self._footprint(n)
            sizes[key] = size
        return sizes

    def _footprint(self, value_len: int) -> int:
        if value_len <= self._page // 2 - 64:  # LMDB keeps it inside a leaf page (≥ half full)
            return 2 * (value_len + _LEAF_NODE) + _INDEX_OVERHEAD
        pages = -(-(value_len + _LMDB_PAGE_HEADER) // self._page)  # its own overflow pages
        return pages * self._page + _INDEX_OVERHEAD

    def entry_bytes(self, header: BlockHeader) -> int:
        return self._footprint(value_bytes(header))

    @property
    def capacity_bytes(self) -> int:
        return self.config.capacity_bytes

    @property
    def used_bytes(self) -> int:
        """Bytes of held blocks, queued writes included (never above ``capacity_bytes`` through
        ``put``; can start above it if the store was created with a larger capacity)."""
        return self._acct.used

    @property
    def capacity_blocks(self) -> int:
        return self.capacity_bytes // self._footprint(_TYPICAL_HEADER + self.config.block_bytes)

    @property
    def writemap(self) -> bool:
        """Whether LMDB writes straight into its map (False if preallocation failed)."""
        return self._store.writemap

    @property
    def pending_ops(self) -> int:
        """Writes and deletes queued or being committed."""
        return len(self._queue.latest)

    def __len__(self) -> int:
        return len(self._acct.sizes)

    # -- writes -----------------------------------------------------------------------------
    def put(self, items: Sequence[tuple[bytes, BlockHeader, Buffer]],
            durable: bool = False) -> list[bool]:
        """Queue each block for writing; ``False`` = refused (over capacity, checksum differs
        from a non-zero ``header.checksum``, the store is broken, or the write queue is full:
        counted as ``queue_full``). Never blocks unless ``durable``: an event loop may call it.
        The payload is copied, so the caller may reuse its buffer at once. ``durable=True``
        (never from an event loop) waits for room in a full queue, then until the blocks are
        committed and synced, and reports writes that failed as ``False``."""
        self._check_open()
        group = GroupedPut(self._queue, self._acct, self.config.batch_bytes, wait=durable)
        results, waits = group.run(items, self._accept)
        if durable and waits:
            self._wait_for(max(op.seq for _, op in waits))
            for index, op in waits:
                results[index] = op.failed is None
        return results

    def _accept(self, key: bytes, header: BlockHeader,
                payload: Buffer) -> tuple[bool, WriteOp | None, bool]:
        """(accepted, the op that writes the key if one is queued or new, whether it is new)."""
        view = memoryview(payload).cast("B")
        if view.nbytes != header.length:
            raise ValueError(f"payload of block {check_key(key).hex()} is {view.nbytes} bytes "
                             f"but header.length is {header.length}")
        check_key(key)
        with self._lock:
            if key in self._acct:
                return True, self._queue.latest.get(key), False
        if self._store.broken:
            return False, None, False
        nbytes = value_bytes(header)
        value = self._queue.take_buffer(nbytes)
        try:
            header = stage_value(header, view, value, key)
        except CorruptValue:
            self._queue.give_back(value)
            self._acct.count("put_checksum")
            return False, None, False
        if not self._acct.take(key, self._footprint(nbytes)):
            self._queue.give_back(value)
            return False, None, False
        return True, WriteOp(key, value, len(value) - view.nbytes), True

    def delete(self, keys: Sequence[bytes], scrub: bool = False) -> int:
        """Forget held keys now (space is free for ``put`` at once); the LMDB delete is queued
        and committed with the next write (or flush), at the latest a fraction of a second
        later. ``scrub`` (a purge): the stored values are overwritten with zeros in the file
        before LMDB frees their pages (``LmdbStore`` module docstring), and the deletes are
        sent at once."""
        self._check_open()
        ops = [WriteOp(key, scrub=scrub) for key in keys if self._acct.forget(key)[0]]
        if ops:  # one group, lazily: it shares the transaction of the next write
            self._queue.submit(ops, urgent=scrub)
        return len(ops)

    def _on_done(self, batch: list[WriteOp]) -> None:
        """Writer callback (under the lock): count failures, un-account puts that did not land,
        and keep deletes that failed (a full disk: LMDB needs pages to delete too) to send
        again once a write lands, so no value stays on disk unindexed."""
        landed = False
        for op in batch:
            if op.failed is None:
                landed = landed or not op.cancelled
            elif op.value is None and not self._store.broken:
                if len(self._undeleted) < _UNDELETED_MAX:
                    self._undeleted[op.key] = op.scrub
                else:
                    log.warning("disk tier: delete of %s failed (%s); it stays on disk "
                                "unindexed until the next start", op.key.hex(), op.failed)
        self._acct.settle(batch, self._queue.latest)
        if landed and self._undeleted:
            self._retry_deletes()

    def _retry_deletes(self) -> None:
        """Queue again the deletes that failed, of keys not put back since."""
        again, self._undeleted = self._undeleted, {}
        latest = self._queue.latest
        ops = [WriteOp(key, scrub=scrub) for key, scrub in again.items()
               if key not in self._acct and key not in latest]
        if ops:
            self.retried_deletes += len(ops)
            self._queue.submit(ops, urgent=False)

    def flush(self) -> None:
        """Wait until every queued write is committed and synced."""
        self._check_open()
        self._wait_for(self._queue.last_seq)

    def _wait_for(self, seq: int) -> None:
        if not self._queue.wait_for(seq):
            raise RuntimeError(f"disk writer of {self.config.path!r} is not running")

    def close(self) -> None:
        """Flush, stop the writer and close LMDB. Idempotent."""
        if self._closed:
            return
        self._queue.close()
        self._store.close()
        self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"disk tier {self.config.path!r} is closed")

    # -- reads ------------------------------------------------------------------------------
    def contains(self, keys: Sequence[bytes]) -> list[bool]:
        sizes = self._acct.sizes
        return [key in sizes for key in keys]

    def get(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        """A verified copy of each block's payload (``bytes``), or ``None`` for a miss. One LMDB
        read snapshot serves the whole batch."""
        self._check_open()
        with self._store.reader() as read:
            return [None if (found := self._read(key, bytes, read)) is None else found[1]
                    for key in keys]

    def read_into(self, key: bytes, dest: Buffer) -> BlockHeader | None:
        """Copy the verified payload of ``key`` into the start of ``dest`` (e.g. a reserved CPU
        slot) and return its header; ``None`` = miss, and then ``dest`` may hold garbage.
        ``ValueError`` if ``dest`` is smaller than the payload."""
        self._check_open()
        out = memoryview(dest).cast("B")

        def copy(payload: memoryview) -> memoryview:
            if payload.nbytes > out.nbytes:
                raise ValueError(f"block {key.hex()} is {payload.nbytes} bytes; destination "
                                 f"holds {out.nbytes}")
            out[: payload.nbytes] = payload
            return out[: payload.nbytes]

        with self._store.reader() as read:
            found = self._read(key, copy, read)
        return found[0] if found is not None else None

    def _read(self, key: bytes, copy: Callable[[memoryview], Buffer],
              read: Callable[[bytes], memoryview | None] | None
              ) -> tuple[BlockHeader, Buffer] | None:
        """(header, ``copy(payload)``) of a held, intact block, else None (corrupt = dropped).
        ``read`` is an open LMDB snapshot (None if it could not be opened)."""
        with self._lock:
            op = self._queue.latest.get(key)
            if op is None and key not in self._acct:
                return None
            if op is not None:  # queued: copy out of the staging buffer (checksummed at put)
                if op.value is None:  # under the lock, before the writer may recycle it
                    return None
                header, payload = decode_value(op.value, verify=False)
                return header, copy(payload)
        try:
            value = None if read is None else read(key)
            if value is not None:
                return self._verified(key, value, copy)
            with self._store.reader() as fresh:  # committed after the snapshot began, or lost
                if fresh is not None:
                    return self._verified(key, fresh(key), copy)
        except DAMAGE_ERRORS as exc:
            self._store.mark_damaged(exc)
        except lmdb.Error as exc:
            log.warning("disk tier: reading %s failed: %s", key.hex(), exc)
        self._acct.count("io")
        return None

    def _verified(self, key: bytes, value: memoryview | None,
                  copy: Callable[[memoryview], Buffer]) -> tuple[BlockHeader, Buffer] | None:
        """(header, ``copy(payload)``) if ``value`` is intact, else drop the key and None."""
        try:
            if value is None:
                raise CorruptValue("missing", "indexed block is not in LMDB")
            header, payload = decode_value(value, verify=False, key=key)
            data = copy(payload)
        except CorruptValue as exc:
            self._drop(key, exc.kind)
            return None
        if checksum(data) != header.checksum:  # verify the very bytes handed out
            self._drop(key, "checksum")
            return None
        return header, data

    def headers(self) -> Iterator[tuple[bytes, BlockHeader]]:
        """Every held block's (key, header): committed ones from LMDB in key order, then queued
        ones. Corrupt header entries are dropped and counted; if LMDB itself reports damage the
        scan ends there (counted ``damaged_file``, the store marked for the next start)."""
        layouts: dict[bytes, str] = {}
        with self._lock:  # decode queued headers before the writer may recycle their buffers
            queued = {key: decode_header(op.value, layouts)[0] if op.value is not None else None
                      for key, op in self._queue.latest.items()}
        sizes, decode = self._acct.sizes, decode_header
        for chunk in self._scan_headers():
            for key, raw in chunk:
                if key not in sizes or (queued and key in queued):
                    continue
                try:
                    yield key, decode(raw, layouts, key)[0]
                except CorruptValue as exc:
                    self._drop(key, exc.kind)
        for key, header in queued.items():
            if header is not None and key in sizes:
                yield key, header

    def _scan_headers(self) -> Iterator[list[tuple[bytes, bytes]]]:
        try:
            yield from self._store.headers()
        except DAMAGE_ERRORS as exc:
            self._store.mark_damaged(exc)
            self._acct.count("damaged_file")

    # -- failures ---------------------------------------------------------------------------
    def _drop(self, key: bytes, kind: str) -> None:
        """Count a corrupt entry, forget it, report it through take_failed and delete it."""
        log.warning("disk tier: block %s is corrupt (%s); dropped", key.hex(), kind)
        self._acct.count(kind)
        if self._acct.forget(key, lost=True)[0]:
            self._queue.submit([WriteOp(key)], urgent=False)

    def take_failed(self) -> list[bytes]:
        return self._acct.take_failed()

    def error_counts(self) -> dict[str, int]:
        return self._acct.errors()
