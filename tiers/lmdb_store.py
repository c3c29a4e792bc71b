"""The LMDB environment behind the disk tier: opening, batched writes, reads and scans.

One environment directory holds three named databases:

* ``data``: key → encoded value (``tiers/codec.py``: header + payload);
* ``headers``: key → the same encoded header alone, so the index rebuild at start reads a compact
  B-tree instead of touching the first page of every payload;
* ``meta``: the store's format tag.

Both entries of a block are written and deleted in the same transaction. Every commit is synced
(``sync=True``, ``metasync=True``): LMDB writes the transaction's pages, ``fdatasync``s them,
then writes the meta page that makes them live with ``O_DSYNC``; a committed batch survives a
crash of the process *and* of the machine.

Writes go through ``pwritev`` from LMDB's own page buffers by default (``writemap=False``).
LMDB's authors note that a writable map "is slower for DBs larger than RAM", which is what a disk
tier is for: with ``writemap`` every write to a page that is not in the page cache first reads
it from disk (a page fault), and even a cached page takes a write-protect fault per 4 KiB after
each sync. Plain writes need neither, and a stray write through the map cannot corrupt the
store. The price is LMDB's copy of each value into a ``malloc``'d buffer: glibc would hand those
megabytes back to the kernel after every commit and fault them in fresh for the next one, so
the store asks glibc (once per open, process-wide, see :func:`keep_freed_heap`) to keep up to
two write batches of freed heap. ``writemap=True`` is still available: LMDB then writes straight
into its memory map; a write into a hole of a sparse file on a full file system would kill the
process with SIGBUS, so the data file is preallocated to the full map size first, and if that
fails the store opens without writemap.

A damaged environment (LMDB reports corruption or a page it cannot find, the file is not an
LMDB file or of another LMDB version, the format tag is not this build's, or an earlier process
left the ``DAMAGED`` marker after hitting corruption) raises :class:`DamagedStore` at open: the
B-trees' pages are walked once (keys only; values carry their own checksums). :func:`move_aside`
renames such a directory so that the tier can start empty; :meth:`LmdbStore.mark_damaged` leaves
the marker when corruption shows up while running.

A purge's deletes *scrub*: each value is overwritten with zeros in the data file (found through
the process's memory map) before its pages are freed, since LMDB leaves freed pages' bytes in
place until it reuses them. The small ``headers`` entry (namespace, parent, position, layout:
digests and numbers, no KV bytes) is freed as usual.

A process-wide ``flock`` on ``asymcache.lock`` keeps a second daemon from opening the same
directory. Not thread-safe by itself except as LMDB allows: one writer thread calls
:meth:`LmdbStore.apply`, any thread may read.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from itertools import islice
from typing import TypeVar

import lmdb
import numpy as np

from asymcache.tiers.write_behind import WriteOp

log = logging.getLogger(__name__)
FORMAT_TAG = b"asymcache-disk-v1"
DAMAGED_MARKER = "DAMAGED"  # left in the directory by a process that hit corruption
DAMAGE_ERRORS = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError,
                 lmdb.VersionMismatchError, lmdb.PanicError, lmdb.BadChecksumError)
_ASIDE_KEPT = 1  # moved-aside copies kept per tier directory (the newest), to bound the disk
_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
_SCAN_CHUNK = 4096
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters (glibc's malloc.h)
_MMAP_THRESHOLD = 32 << 20  # glibc's own ceiling for its dynamic mmap threshold (64-bit)
_INT_MAX = (1 << 31) - 1
T = TypeVar("T")


def keep_freed_heap(nbytes: int) -> bool:
    """Ask glibc's ``malloc`` to keep up to ``nbytes`` of freed heap per arena (and to serve
    blocks below 32 MiB from the heap) instead of returning it to the kernel at once.

    Process-wide side effect, idempotent. glibc raises its mmap threshold by itself once a large
    block is freed, but then trims the heap whenever more than twice that block is free, so the
    ~64 MiB of page buffers LMDB frees after each commit would be unmapped and, in the next
    commit, faulted in again page by page and zeroed by the kernel (on the 2-core VM this was
    measured on, first-touched memory fills at ~1.6 GB/s against ~25 GB/s for reused memory).
    Returns False where the C library has no ``mallopt`` (not glibc)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    trim = min(max(nbytes, _MMAP_THRESHOLD), _INT_MAX)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, trim))


def failure_kind(exc: lmdb.Error) -> str:
    """``full`` for a full map or file system, ``io`` for any other LMDB/OS error."""
    if isinstance(exc, lmdb.MapFullError) or getattr(exc, "code", None) in _FULL_ERRNOS:
        return "full"
    return "io"


def _items(cur: lmdb.Cursor) -> list[tuple[bytes, bytes]]:
    """Up to ``_SCAN_CHUNK`` (key, value) items from ``cur`` on (a ``buffers=False`` txn)."""
    return list(islice(cur.iternext(), _SCAN_CHUNK))


def _lengths(cur: lmdb.Cursor) -> list[tuple[bytes, int]]:
    """Up to ``_SCAN_CHUNK`` (key, value length) items from ``cur`` on (``buffers=True``)."""
    return [(bytes(key), len(value)) for key, value in islice(cur.iternext(), _SCAN_CHUNK)]


class DamagedStore(Exception):
    """The environment at ``path`` cannot be trusted (see the module docstring)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"disk tier {path!r} is damaged: {reason}")
        self.path, self.reason = path, reason


def move_aside(path: str) -> str:
    """Rename the directory ``path`` to ``<path>.damaged-<UTC time>`` (older such copies beyond
    the newest ``_ASIDE_KEPT`` are deleted) and return the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = f"{path}.damaged-{stamp}"
    n = 1
    while os.path.exists(aside):
        aside, n = f"{path}.damaged-{stamp}-{n}", n + 1
    os.rename(path, aside)
    parent, base = os.path.split(os.path.abspath(path))
    older = sorted(e for e in os.listdir(parent) if e.startswith(base + ".damaged-"))
    for name in older[:-_ASIDE_KEPT]:
        shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    return aside


class LmdbStore:
    """An opened LMDB environment of ``map_bytes``; see the module docstring. ``batch_bytes`` is
    the most one transaction writes (sizes the freed heap kept for LMDB's page buffers)."""

    def __init__(self, path: str, map_bytes: int, writemap: bool, batch_bytes: int) -> None:
        os.makedirs(path, exist_ok=True)
        self.path = path
        self._data_fd = -1  # opened by the first scrubbing delete
        self._map: tuple[int, int, int] | None = None  # (start, end, file offset) of the map
        self._lock_fd = self._lock_dir(path)
        try:
            self.writemap = writemap and self._preallocate(path, map_bytes)
            if not self.writemap:
                keep_freed_heap(2 * batch_bytes)
            # meminit: LMDB zeroes the last page of each buffer it mallocs (4 KiB of a value's
            # overflow pages), so no leftover heap bytes reach the file; moot with writemap.
            self.env = lmdb.open(path, map_size=map_bytes, subdir=True, max_dbs=3,
                                 writemap=self.writemap, sync=True, metasync=True,
                                 meminit=not self.writemap)
        except DAMAGE_ERRORS as exc:
            os.close(self._lock_fd)
            raise DamagedStore(path, f"LMDB cannot open it ({exc})") from exc
        except BaseException:
            os.close(self._lock_fd)
            raise
        try:
            self.env.reader_check()  # clear reader slots left by a killed process
            self.data = self.env.open_db(b"data")
            self.hdrs = self.env.open_db(b"headers")
            self.meta = self.env.open_db(b"meta")
            self._check_format()
            self._walk()
        except DAMAGE_ERRORS as exc:
            self.close()
            raise DamagedStore(path, f"LMDB reports {exc}") from exc
        except BaseException:
            self.close()
            raise
        self.page_bytes = self.env.stat()["psize"]
        self.broken = False  # damage found while running: writes refused (mark_damaged)

    @staticmethod
    def _lock_dir(path: str) -> int:
        fd = os.open(os.path.join(path, "asymcache.lock"), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RuntimeError(f"disk tier {path!r} is already open in another process") from None
        return fd

    @staticmethod
    def _preallocate(path: str, map_bytes: int) -> bool:
        data = os.path.join(path, "data.mdb")
        if not os.path.exists(data) or os.path.getsize(data) == 0:
            lmdb.open(path, map_size=map_bytes, subdir=True, max_dbs=3).close()  # meta pages
        fd = os.open(data, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, map_bytes)
            return True
        except OSError as exc:
            log.warning("disk tier %s: cannot preallocate %d bytes (%s); opening without "
                        "writemap", path, map_bytes, exc)
            return False
        finally:
            os.close(fd)

    def _check_format(self) -> None:
        if os.path.exists(os.path.join(self.path, DAMAGED_MARKER)):
            raise DamagedStore(self.path, "an earlier process found corruption in it")
        with self.env.begin(write=True) as txn:
            tag = txn.get(b"format", db=self.meta)
            if tag is None:
                txn.put(b"format", FORMAT_TAG, db=self.meta)
            elif tag != FORMAT_TAG:
                raise DamagedStore(self.path, f"it holds format {bytes(tag)!r}, this build "
                                              f"reads {FORMAT_TAG!r}")

    def _walk(self) -> None:
        """Visit every page of both B-trees (keys only): corruption raises here, at open."""
        for db in (self.data, self.hdrs):
            with self.env.begin(db=db, buffers=True) as txn:
                for _ in txn.cursor().iternext(keys=True, values=False):
                    pass

    def mark_damaged(self, exc: BaseException) -> None:
        """Corruption found while running: refuse writes from now on and leave the marker, so
        that the next start moves the directory aside instead of trusting it."""
        if self.broken:
            return
        self.broken = True
        log.error("disk tier %s: LMDB reports damage (%s); refusing writes, and the next start "
                  "moves the directory aside", self.path, exc)
        try:
            with open(os.path.join(self.path, DAMAGED_MARKER), "w") as f:
                f.write(f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {exc}\n")
        except OSError as err:
            log.error("disk tier %s: cannot leave the damage marker: %s", self.path, err)

    # -- writes (the writer thread) ---------------------------------------------------------
    def apply(self, ops: list[WriteOp]) -> None:
        """The disk tier's write-behind sink: commit ``ops`` (whole values, ``head`` empty) in one
        synced transaction; if that fails, retry each op alone so one bad op costs only itself.
        Sets ``op.failed`` to an error kind on the ops that did not land."""
        if self.broken:
            for op in ops:
                op.failed = "io"
            return
        try:
            self._commit(ops)
            return
        except lmdb.Error as exc:
            self._note(exc)
        for op in ops:
            op.failed = self._commit_alone(op)

    def _commit_alone(self, op: WriteOp) -> str | None:
        for attempt in range(2):
            try:
                self._commit([op])
                return None
            except lmdb.Error as exc:
                self._note(exc)
                if attempt == 0 and not self.broken:
                    self._tick()  # pages freed by the last commit become reusable after one more
                else:
                    return failure_kind(exc)
        return "io"

    def _commit(self, ops: list[WriteOp]) -> None:
        with self.env.begin(write=True, buffers=True) as txn:
            for op in ops:
                if op.cancelled:
                    continue
                if op.value is None:
                    if op.scrub:
                        self._scrub(txn, op.key)
                    txn.delete(op.key, db=self.data)
                    txn.delete(op.key, db=self.hdrs)
                else:
                    txn.put(op.key, op.value, db=self.data)
                    txn.put(op.key, memoryview(op.value)[: op.header_len], db=self.hdrs)

    def _scrub(self, txn: lmdb.Transaction, key: bytes) -> None:
        """Overwrite ``key``'s stored value with zeros where it lies in the data file (its
        overflow pages hold it contiguously), before the delete frees those pages: LMDB keeps
        freed pages' old bytes until it reuses them. The commit's ``fdatasync`` makes the zeros
        durable with the delete. A value on a page this transaction wrote is not on disk yet:
        nothing to overwrite."""
        value = txn.get(key, db=self.data)
        if value is None or not len(value):
            return
        offset = self._file_offset(np.frombuffer(value, np.uint8).ctypes.data)
        if offset is None:
            return
        if self._data_fd < 0:
            self._data_fd = os.open(os.path.join(self.path, "data.mdb"), os.O_RDWR)
        os.pwrite(self._data_fd, bytes(len(value)), offset)

    def _file_offset(self, addr: int) -> int | None:
        """The data file offset of map address ``addr`` (None: not in the file's mapping), from
        ``/proc/self/maps`` (LMDB does not report where it mapped the file)."""
        if self._map is None:
            data = os.path.realpath(os.path.join(self.path, "data.mdb"))
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].strip() == data:
                        start, end = (int(x, 16) for x in parts[0].split("-"))
                        if start <= addr < end:
                            self._map = (start, end, int(parts[2], 16))
                            break
            if self._map is None:
                return None
        start, end, file_off = self._map
        return addr - start + file_off if start <= addr < end else None

    def _tick(self) -> None:
        try:
            with self.env.begin(write=True) as txn:
                txn.put(b"tick", b"", db=self.meta)
        except lmdb.Error as exc:
            self._note(exc)

    def _note(self, exc: lmdb.Error) -> None:
        if isinstance(exc, DAMAGE_ERRORS):
            self.mark_damaged(exc)
        elif not isinstance(exc, lmdb.MapFullError):
            log.warning("disk tier %s: write failed: %s", self.path, exc)

    # -- reads (any thread) -----------------------------------------------------------------
    @contextmanager
    def reader(self) -> Iterator[Callable[[bytes], memoryview | None] | None]:
        """A read snapshot: yields ``get(key)`` returning a view of the stored value that is
        valid only inside the ``with`` block, or None if LMDB could not open one (logged)."""
        try:
            txn = self.env.begin(db=self.data, buffers=True)
        except lmdb.Error as exc:
            log.warning("disk tier %s: cannot open a read snapshot: %s", self.path, exc)
            yield None
            return
        with txn:
            yield txn.get

    def sizes(self) -> Iterator[tuple[bytes, int]]:
        """(key, stored value length) of every block, read from the B-tree only (a value's
        length sits in its leaf node; its overflow pages are not touched)."""
        for chunk in self._chunks(self.data, _lengths, buffers=True):
            yield from chunk

    def headers(self) -> Iterator[list[tuple[bytes, bytes]]]:
        """Chunks of (key, encoded header) of every block, copied out of the map."""
        return self._chunks(self.hdrs, _items, buffers=False)

    def _chunks(self, db: object, read: Callable[[lmdb.Cursor], list[tuple[bytes, T]]],
                buffers: bool) -> Iterator[list[tuple[bytes, T]]]:
        """``read(cursor)`` of successive chunks of ``db`` in key order, each in its own short
        read transaction: a long-lived snapshot would keep the writer from reusing freed pages
        while a slow consumer iterates."""
        start: bytes | None = None
        while True:
            with self.env.begin(db=db, buffers=buffers) as txn:
                cur = txn.cursor()
                found = cur.first() if start is None else cur.set_range(start)
                if found and start is not None and cur.key() == start:
                    found = cur.next()
                chunk = read(cur) if found else []
            if chunk:
                start = chunk[-1][0]
                yield chunk
            if len(chunk) < _SCAN_CHUNK:
                return

    def close(self) -> None:
        self.env.close()
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
        os.close(self._lock_fd)
