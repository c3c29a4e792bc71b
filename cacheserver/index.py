"""The daemon's block index: what is known about every block some tier holds.

A :class:`BlockRecord` exists exactly while at least one tier holds (or is being filled with) the
block: an engine's GPU slot, a level of the tier chain (``where``, one bit per level: the CPU,
the disk, the remote tier's blocks this daemon stored or promoted), or a reserved CPU slot.
Records are dropped as soon as nothing holds them, so the index is bounded by the sum of the
tiers' capacities and the registered engines' GPU pools; :class:`BlockIndex` enforces that bound
(``max_blocks``) and is resized when engines register or leave. Pure bookkeeping: no I/O, no
sockets, no tier calls.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import cast

from asymcache.cacheserver.blocks import ROOT_PARENT
from asymcache.cacheserver.policy import BlockInfo
from asymcache.cacheserver.protocol import BlockRef


class IndexFull(Exception):
    """The index is at ``max_blocks``: a caller bug or a bound configured too small."""


@dataclass(slots=True)
class BlockRecord:
    """One block's metadata. ``gpu`` names the engines whose GPU pool holds it (each session
    knows the slot); ``where`` the chain's levels that hold it (``chain.py``); ``cpu`` is its
    slot in the CPU level (-1 none) and ``cpu_pending`` a reserved, not yet readable one.

    Memory (one record per indexed block): ``__slots__``, ``gpu`` an immutable tuple (the
    shared ``()`` for most blocks), and the record is its own policy view (:meth:`info`).
    """

    key: bytes
    namespace: bytes
    parent: bytes | None
    position: int
    n_tokens: int
    n_bytes: int
    layout: str
    gpu: tuple[str, ...] = ()
    where: int = 0  # one bit per level of the tier chain that holds the block
    cpu: int = -1
    cpu_pending: int = -1
    cpu_owner: str = ""  # engine id that reserved ``cpu_pending`` ("" = the daemon itself)
    pinned: bool = False
    pin_until: float | None = None  # None with ``pinned`` = until UNPIN
    busy: int = 0  # moves in progress: the record stays indexed while a tier is being filled
    session: bytes | None = None  # client signals (policy/sessions.py): the latest session
    shared: bool = False  # that used the block, whether another one did, and until when a
    retain_until: float = 0.0  # client asked to keep it (retention; 0 = not asked)

    @property
    def held(self) -> bool:
        return bool(self.gpu) or self.where != 0 or self.cpu_pending >= 0 or self.busy > 0

    def info(self) -> BlockInfo:
        """The policy's view of this block: the record itself, which has every field of
        :class:`BlockInfo` (``key``, ``parent``, ``position``, ``n_tokens``, ``n_bytes``) and
        never changes them, so no copy is made per tier (policies only read their infos)."""
        return cast(BlockInfo, self)

    def pin_active(self, now: float) -> bool:
        return self.pinned and (self.pin_until is None or self.pin_until > now)

    @property
    def parent_or_root(self) -> bytes:
        return self.parent if self.parent is not None else ROOT_PARENT


class BlockIndex:
    """Key -> :class:`BlockRecord`, bounded by ``max_blocks``.

    Records share what repeats: a block's ``parent`` is its indexed parent's ``key`` object, and
    namespaces and layouts are one object each (:meth:`shared`, at most ``SHARED_MAX``)."""

    SHARED_MAX = 4096  # distinct namespaces and layouts shared (more are stored per record)

    def __init__(self, max_blocks: int) -> None:
        if max_blocks <= 0:
            raise ValueError(f"max_blocks must be positive, got {max_blocks}")
        self.max_blocks = max_blocks
        self._records: dict[bytes, BlockRecord] = {}
        self._shared: dict[object, object] = {}

    def shared(self, value: object) -> object:
        """The one object equal to ``value`` that records hold (``value`` itself past the
        bound)."""
        got = self._shared.get(value)
        if got is None:
            if len(self._shared) >= self.SHARED_MAX:
                return value
            got = self._shared[value] = value
        return got

    def parent_key(self, parent: bytes) -> bytes:
        """``parent`` as the indexed parent's key object (saves a bytes object per block)."""
        rec = self._records.get(parent)
        return rec.key if rec is not None else parent

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: bytes) -> bool:
        return key in self._records

    def records(self) -> Iterator[BlockRecord]:
        return iter(self._records.values())

    def get(self, key: bytes) -> BlockRecord | None:
        return self._records.get(key)

    def ensure(self, ref: BlockRef, n_tokens: int, n_bytes: int, layout: str) -> BlockRecord:
        """The record of ``ref.key``, created (not yet held by any tier) if it is new."""
        rec = self._records.get(ref.key)
        if rec is not None:
            return rec
        if len(self._records) >= self.max_blocks:
            raise IndexFull(f"block index is full ({self.max_blocks} blocks)")
        parent = None if ref.parent == ROOT_PARENT else self.parent_key(ref.parent)
        rec = BlockRecord(ref.key, self.shared(ref.namespace), parent,  # type: ignore[arg-type]
                          ref.position, n_tokens, n_bytes, layout)
        self._records[ref.key] = rec
        return rec

    def add(self, rec: BlockRecord) -> bool:
        """Index a record built by the caller (the start-up rebuild); ``False`` (and nothing
        changed) if ``rec.key`` is indexed already."""
        records = self._records
        if len(records) >= self.max_blocks:
            raise IndexFull(f"block index is full ({self.max_blocks} blocks)")
        return records.setdefault(rec.key, rec) is rec

    def discard_if_unheld(self, rec: BlockRecord) -> bool:
        """Drop ``rec`` if no tier holds it any more; returns whether it was dropped."""
        if rec.held:
            return False
        self._records.pop(rec.key, None)
        return True

    def resize(self, max_blocks: int) -> None:
        """New bound; it never drops below the records held now."""
        self.max_blocks = max(max_blocks, len(self._records), 1)
