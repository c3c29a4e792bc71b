"""Moving block bytes between the engine's pool and the daemon's CPU tier.

Three moves, each one contiguous copy per block (block-major layout):

* **fetch** — CPU-tier slot (a private copy of the mapped shared memory, checked against the
  block's checksum, or bytes from GET for an engine on another host) → pool slot, on the copy
  stream;
* **demote** — a victim the daemon named: pool slot → the CPU slot it reserved, then COMMIT
  with that CPU slot and the checksum of the bytes copied (the daemon makes it readable only
  after this confirmation);
* **write through** — a freshly committed block: reserve a CPU slot, copy, COMMIT (or PUT the
  bytes when the tier is not mapped), so other engines and later requests find it there.

The CPU COMMITs of a step go together: a demotion's copy is made at once (before its pool slot
can be overwritten) and remembered with the registration it was made under; :meth:`confirm`
(called before this engine's next LOOKUP, and by the write-through at the end of the step)
sends every copy made since in one COMMIT. Until then the slot stays reserved and unreadable,
as before its confirmation in any case (DESIGN.md §6).

Every failure of the daemon degrades to "not moved"; the caller then recomputes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from asymcache.cacheserver.protocol import BlockRef
from asymcache.engine.block_manager import BlockManager
from asymcache.engine.kv_pool import KVPool
from asymcache.engine.planner import Location
from asymcache.engine.request import Action
from asymcache.tiers.base import checksum

if TYPE_CHECKING:
    from asymcache.engine.cache_link import CacheLink
    from asymcache.engine.cpu_slots import Buffer


class Transfers:
    """Copies between ``pool`` and the CPU tier reached through ``link`` (which may be None)."""

    def __init__(self, pool: KVPool, link: CacheLink | None) -> None:
        self.pool = pool
        self.link = link
        self._unconfirmed: list[tuple[BlockRef, int, int]] = []  # (ref, cpu slot, generation)
        self._sums: list[int] = []  # the checksum of each unconfirmed copy's bytes

    def views(self, found: Sequence[Location], actions: Sequence[Action],
              keys: Sequence[bytes]) -> dict[int, Buffer]:
        """Host buffers of the blocks to fetch, by block index; missing ones could not be had."""
        idx = [i for i, a in enumerate(actions) if a.fetched and found[i].where == "cpu"]
        if not idx or self.link is None:
            return {}
        bufs = self.link.read_cpu([found[i].slot for i in idx], [keys[i] for i in idx])
        return {i: b for i, b in zip(idx, bufs, strict=True) if b is not None}

    def fetch(self, slots: Sequence[int], views: Sequence[Buffer]) -> None:
        """Copy host blocks into pool slots (side effect: writes the pool)."""
        if slots:
            self.pool.load(list(slots), [self.pool.host_view(v) for v in views])

    def give_up(self, victims: Sequence[tuple[int, bytes, int]], blocks: BlockManager,
                refs: dict[bytes, BlockRef]) -> tuple[list[int], int]:
        """Free the daemon's victims ``(slot, key, demote_to)``, demoting those with a CPU slot
        first. Returns the freed slots (referenced once) and the bytes demoted. A victim the
        engine still uses is kept and announced again, so the daemon's index stays true (its
        bytes still go to the reserved CPU slot: a correct copy, and no reservation is left).
        A victim whose slot no longer holds its key cannot be demoted: its reservation is
        abandoned (the link gives it back)."""
        freed, demote, keep, unfillable = [], [], [], []
        for slot, key, cpu_slot in victims:
            if not 0 <= slot < self.pool.num_blocks or blocks.key_of(slot) != key:
                if cpu_slot >= 0:  # its bytes are not here: the reservation goes back
                    unfillable.append((key, cpu_slot))
                continue
            ref = refs[key]
            if cpu_slot >= 0:
                demote.append((ref, slot, cpu_slot))
            if blocks.is_idle(slot):
                freed.append(slot)
            else:
                keep.append((ref, slot))
        if unfillable and self.link is not None:
            self.link.abandon(unfillable)
        moved = self._to_cpu(demote)  # before the freed slots can be overwritten
        for slot in freed:
            refs.pop(blocks.evict(slot) or b"", None)
        if keep and self.link is not None:
            self.link.commit("gpu", [r for r, _ in keep], [s for _, s in keep])
        return freed, moved

    def demote_ahead(self, victims: Sequence[tuple[int, bytes, int]], blocks: BlockManager,
                     refs: dict[bytes, BlockRef]) -> int:
        """Copy victims named ahead of need ``(slot, key, demote_to)`` that are still in their
        slots into the CPU slots reserved for them (their COMMIT goes with :meth:`confirm`),
        keeping the slots; the reservations of victims gone meanwhile are given back. Bytes
        copied."""
        moves, gone = [], []
        for slot, key, cpu_slot in victims:
            if cpu_slot < 0:
                continue
            if 0 <= slot < self.pool.num_blocks and blocks.key_of(slot) == key and key in refs:
                moves.append((refs[key], slot, cpu_slot))
            else:
                gone.append((key, cpu_slot))
        if gone and self.link is not None:
            self.link.abandon(gone)
        return self._to_cpu(moves)

    def write_through(self, batch: Sequence[tuple[BlockRef, int]]) -> list[bool]:
        """Copy committed blocks into the CPU tier when it is not mapped here (PUT); one bool
        per block (bytes moved or not). A mapped tier is written by :meth:`fill_reserved`."""
        if self.link is None or not batch:
            return [False] * len(batch)
        refs = [ref for ref, _ in batch]
        return self.link.put(refs, [self.pool.read(slot) for _, slot in batch])

    def fill_reserved(self, blocks: BlockManager, refs: dict[bytes, BlockRef]) -> list[bytes]:
        """Write through the blocks whose CPU slots the daemon reserved in ACKs of one-way GPU
        COMMITs (no round trip of their own): copy each block still in the pool into its slot
        and queue the CPU COMMIT (:meth:`confirm`); a block gone from the pool since gives its
        reservation back. Returns the keys copied."""
        if self.link is None:
            return []
        moves, gone = [], []
        for key, cpu_slot in self.link.take_reserved():
            slot, ref = blocks.lookup(key), refs.get(key)
            if slot is None or ref is None:
                gone.append((key, cpu_slot))
            else:
                moves.append((ref, slot, cpu_slot))
        if gone:
            self.link.abandon(gone)
        before = len(self._unconfirmed)
        self._to_cpu(moves)
        return [ref.key for ref, _, _ in self._unconfirmed[before:]]

    @property
    def unconfirmed(self) -> int:
        """CPU copies made and not yet confirmed."""
        return len(self._unconfirmed)

    def confirm(self) -> int:
        """COMMIT every CPU copy made since the last call (demotions, write-through) in one
        request; copies of an earlier registration are dropped by the link. Returns how many
        were confirmed. Side effect: those blocks become readable in the CPU tier."""
        copies, self._unconfirmed = self._unconfirmed, []
        sums, self._sums = self._sums, []
        if not copies or self.link is None:
            return 0
        return self.link.confirm_cpu(copies, sums)

    def confirm_if_any(self, keys: Sequence[bytes]) -> int:
        """:meth:`confirm` if an unconfirmed copy holds one of ``keys``, so that a LOOKUP or a
        CPU reservation of them sees that copy in the CPU tier, as it would have without
        batching; else nothing (no request)."""
        if not self._unconfirmed or self._unconfirmed_keys().isdisjoint(keys):
            return 0
        return self.confirm()

    def _unconfirmed_keys(self) -> set[bytes]:
        return {ref.key for ref, _, _ in self._unconfirmed}

    def _to_cpu(self, moves: Sequence[tuple[BlockRef, int, int]]) -> int:
        """Copy ``(ref, pool slot, cpu slot)`` moves (waiting until the bytes are there) and
        queue their COMMIT for :meth:`confirm`; bytes moved. A reserved slot that cannot be
        written is left to the link, which gives it back."""
        if not moves or self.link is None:
            return 0
        dests = self.link.reserved_views([(r.key, c) for r, _, c in moves])
        moves = [m for m, d in zip(moves, dests, strict=True) if d is not None]
        dests = [d for d in dests if d is not None]
        if not moves:
            return 0
        self.pool.store([s for _, s, _ in moves], [self.pool.host_view(d) for d in dests])
        generation = self.link.generation  # the slots' registration (reserved_views checked)
        self._unconfirmed += [(r, c, generation) for r, _, c in moves]
        self._sums += [checksum(d) for d in dests]  # right after the copy: what COMMIT vouches
        return len(moves) * self.pool.bytes_per_block
