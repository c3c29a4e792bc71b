"""The CPU tier's shared-memory slab: created by the daemon, attached by local engines.

A slab is one POSIX shared-memory segment of ``num_slots`` block-major slots of ``slot_bytes``
each; slot ``i`` is bytes ``[i·slot_bytes, (i+1)·slot_bytes)``. The daemon creates it
(:func:`create_slab`) and unlinks it when its tier closes; engines on the same host map it by
name (:func:`attach`) and copy block bytes into and out of slot views without the daemon
touching them.

Python < 3.13 registers *every* ``SharedMemory`` it opens, attached ones included, with the
process's resource tracker, which unlinks them when the process exits: an engine that merely
attached would destroy the daemon's segment on exit (and "register, then unregister" leaves a
window in which a crash does exactly that). So this module does not use ``SharedMemory``: it
opens and maps segments itself through ``_posixshmem`` (the binding ``SharedMemory`` is built
on, present on every POSIX CPython). :func:`attach` never registers anything; the creator does
register, so a daemon killed without closing its tier still has its segment removed by its
resource tracker.
"""

from __future__ import annotations

import _posixshmem  # CPython's POSIX shm binding (the one multiprocessing.shared_memory uses)
import contextlib
import logging
import mmap
import os
import secrets
from collections.abc import Callable
from multiprocessing import resource_tracker

import numpy as np

log = logging.getLogger(__name__)
_PAGE = mmap.PAGESIZE


class Slab:
    """A mapped slab of fixed-size slots. Slot views are writable and zero-copy.

    Views returned by :meth:`slot` and :attr:`buffer` share the mapping: release them (and any
    numpy arrays or tensors built on them) before :meth:`close`, or the unmapping is deferred
    until they are garbage-collected.
    """

    def __init__(self, name: str, buf: memoryview, slot_bytes: int, num_slots: int,
                 release: Callable[[], None]) -> None:
        if buf.nbytes < slot_bytes * num_slots:
            raise ValueError(
                f"shared memory {name!r} is {buf.nbytes} bytes, smaller than {num_slots} slots "
                f"of {slot_bytes} bytes: wrong slot_bytes/num_slots for this segment?"
            )
        self.name = name
        self.slot_bytes = slot_bytes
        self.num_slots = num_slots
        self._buf: memoryview | None = buf[: slot_bytes * num_slots]
        self._release = release

    @property
    def buffer(self) -> memoryview:
        """The whole slab, ``num_slots · slot_bytes`` bytes, writable."""
        if self._buf is None:
            raise ValueError(f"slab {self.name!r} is closed")
        return self._buf

    def slot(self, index: int) -> memoryview:
        """Writable view of slot ``index`` (``slot_bytes`` bytes)."""
        if not 0 <= index < self.num_slots:
            raise IndexError(f"slot {index} out of range [0, {self.num_slots})")
        start = index * self.slot_bytes
        return self.buffer[start:start + self.slot_bytes]

    def close(self) -> None:
        """Unmap (and, for the creator, unlink) the slab. Idempotent."""
        if self._buf is None:
            return
        view, self._buf = self._buf, None
        with contextlib.suppress(BufferError):  # exported to numpy/torch: freed with them
            view.release()
        self._release()

    def __enter__(self) -> Slab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_geometry(slot_bytes: int, num_slots: int) -> None:
    for field, value in (("slot_bytes", slot_bytes), ("num_slots", num_slots)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{field} must be a positive int, got {value!r}")


def _shm_open(name: str, create_size: int = 0) -> mmap.mmap:
    """Map the segment ``/name`` (creating it exclusively with ``create_size`` bytes if > 0)."""
    flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create_size else 0)
    fd = _posixshmem.shm_open("/" + name, flags, mode=0o600)
    try:
        if create_size:
            try:
                os.ftruncate(fd, create_size)
            except OSError:
                _posixshmem.shm_unlink("/" + name)
                raise
        return mmap.mmap(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _unmapper(name: str, buf: memoryview, mapping: mmap.mmap) -> Callable[[], None]:
    """A function that unmaps ``mapping``; while views of it (numpy arrays, tensors) are still
    alive it only logs, and the mapping goes away when the last of them is freed."""

    def unmap() -> None:
        try:
            buf.release()
            mapping.close()
        except BufferError:
            log.warning("slab %s still has views in use; it is unmapped when they are freed", name)

    return unmap


def create_slab(slot_bytes: int, num_slots: int, name: str | None = None,
                populate: bool = False) -> Slab:
    """Create a new zero-filled segment (``name`` or a generated one) for ``num_slots`` slots.

    ``populate`` touches every page now, so the memory is committed at start and the first
    copies do not pay page faults. Closing the returned slab unlinks the segment.
    Raises ``FileExistsError`` (with advice) if a segment of that name already exists.
    """
    _check_geometry(slot_bytes, num_slots)
    name = name.lstrip("/") if name else f"asymcache_{secrets.token_hex(8)}"
    try:
        mapping = _shm_open(name, create_size=slot_bytes * num_slots)
    except FileExistsError:
        raise FileExistsError(
            f"shared memory {name!r} already exists: another daemon uses it, or a crashed one "
            f"left it behind (remove /dev/shm/{name} if no process uses it)"
        ) from None
    # Registered so that the resource tracker unlinks the segment if this process dies unclosed.
    resource_tracker.register("/" + name, "shared_memory")
    buf = memoryview(mapping)
    if populate:
        np.frombuffer(buf, dtype=np.uint8)[::_PAGE] = 0  # one write per page faults it in
    unmap = _unmapper(name, buf, mapping)

    def release() -> None:
        unmap()
        try:
            _posixshmem.shm_unlink("/" + name)
        except FileNotFoundError:
            log.warning("slab %s was already unlinked by another process", name)
        resource_tracker.unregister("/" + name, "shared_memory")

    return Slab(name, buf, slot_bytes, num_slots, release)


def attach(shm_name: str, slot_bytes: int, num_slots: int) -> Slab:
    """Map the slab ``shm_name`` created by another process (typically the daemon).

    The segment is never registered with this process's resource tracker, so it survives this
    process's exit; :meth:`Slab.close` only unmaps it. Raises ``FileNotFoundError`` if no such
    segment exists and ``ValueError`` if it is smaller than the given geometry.
    """
    _check_geometry(slot_bytes, num_slots)
    name = shm_name.lstrip("/")
    mapping = _shm_open(name)
    buf = memoryview(mapping)
    unmap = _unmapper(name, buf, mapping)
    try:
        return Slab(name, buf, slot_bytes, num_slots, unmap)
    except ValueError:
        unmap()
        raise
