"""The CPU-tier half of :class:`~asymcache.engine.cache_link.CacheLink`: the slots the daemon
hands this engine, and reading and writing them (a mixin; ``cache_link.py`` keeps the
connection and the daemon's ops).

A CPU slot comes with a grant: LOOKUP and PROMOTE lease slots of blocks to read, ALLOCATE and
COMMIT ``reserve`` reserve slots to fill, each under the registration (``generation``) whose
reply handed it out (:class:`asymcache.engine.slot_grants.SlotGrants`). A slot is read or
written only under that registration: one handed out before the daemon restarted is a block
gone (counted in ``stale_slots``), never bytes of the new daemon's slab. A leased block's
bytes are copied out of the mapped slot and the copy checked against the checksum its grant
came with; a mismatch is a miss, counted in ``corrupt`` and reported (VERIFY, one-way). A
reservation of the current registration the engine cannot fill is owed back and given back
(CANCEL) at the next tick. Without the mapping (the daemon on another host) blocks travel with
GET and PUT.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from asymcache.tiers.base import checksum

if TYPE_CHECKING:
    from asymcache.cacheserver.blocks import KVLayout
    from asymcache.engine.client import CacheClient
    from asymcache.engine.slot_grants import SlotGrants

log = logging.getLogger(__name__)
Buffer = bytes | bytearray | memoryview
T = TypeVar("T")
MAX_KEYS = 1024  # keys per request: well under the daemon's default limit (4096)
MAX_BLOCKS_PER_MESSAGE = 32  # block payloads per PUT/GET: bounded message size


class CpuSlotAccess:
    """The CPU-slot methods of ``CacheLink`` (a mixin: they read the link's client, layout,
    connection state and counters; the grants, checksums and owed reservations are theirs)."""

    client: CacheClient
    layout: KVLayout
    connected: bool
    mapped: bool  # the CPU tier's shared memory is reachable from here
    grants: SlotGrants
    stale_slots: int
    given_back: int
    corrupt: int
    _sums: dict[bytes, int]  # checksum each granted CPU block must have
    _owed: tuple[int, list[bytes]]  # (generation, keys) not to be filled
    _guard: Callable[..., object]

    @property
    def owed(self) -> int:
        """CPU reservations of the current registration this engine could not fill."""
        return len(self._owed[1]) if self._owed[0] == self.client.generation else 0

    def _owe(self, key: bytes, generation: int) -> None:
        if generation != self._owed[0]:  # a newer registration: the older ones are gone
            self._owed = (generation, [])
        self._owed[1].append(key)

    def _give_back(self) -> None:
        """CANCEL the unfilled CPU reservations: the daemon frees their ``FILLING`` slots."""
        keys, self._owed = self._owed[1], (-1, [])
        for part in batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.cancel(part, notify=True), None)
            self.given_back += len(part) if self.connected else 0

    def _grant(self, keys: Sequence[bytes], slots: Sequence[int],
               sums: Sequence[int] = ()) -> None:
        """Record the CPU slots (``>= 0``) a reply just handed out, under the client's current
        registration (the one the reply came in), with the checksums ``sums`` their bytes must
        have (LOOKUP and PROMOTE; none for reservations, which this engine fills)."""
        generation = self.client.generation
        for i, (key, slot) in enumerate(zip(keys, slots, strict=True)):
            if slot >= 0:
                self.grants.grant(key, slot, generation)
                if i < len(sums):
                    self._sums[key] = sums[i]

    def read_cpu(self, slots: Sequence[int | None], keys: Sequence[bytes]) -> list[Buffer | None]:
        """Host bytes of leased CPU-tier blocks: private copies of the mapped slots that match
        their checksums (else None: counted, and reported to the daemon), or GET (the daemon
        checks) when not mapped."""
        nbytes = self.layout.bytes_per_block
        if self.mapped:
            views = [self.cpu_view(s, k) if s is not None else None
                     for s, k in zip(slots, keys, strict=True)]
            if self.mapped or not self.connected:
                return self._checked(keys, views)
        got: list[Buffer | None] = []
        for part in batches(keys, MAX_BLOCKS_PER_MESSAGE):
            got += self._guard(lambda part=part: self.client.get(part), [None] * len(part))
        return [g if g is not None and len(g) == nbytes else None for g in got]

    def _checked(self, keys: Sequence[bytes], views: Sequence[memoryview | None]
                 ) -> list[Buffer | None]:
        """Copy each view out, then check the copy (a later write into the slot cannot reach
        it) against the checksum granted with the slot; a daemon that predates checksums gave
        none (0), and its blocks are taken as they are."""
        out: list[Buffer | None] = []
        bad: list[bytes] = []
        for key, view in zip(keys, views, strict=True):
            expected = self._sums.pop(key, 0)
            data = None if view is None else bytearray(view)
            if data is not None and expected and checksum(data) != expected:
                bad.append(key)
                data = None
            out.append(data)
        if bad:
            self.corrupt += len(bad)
            log.warning("%d CPU-tier block(s) did not match their checksums: recomputing them",
                        len(bad))
            for part in batches(bad, MAX_KEYS):
                self._guard(lambda part=part: self.client.verify(part, notify=True), None)
        return out

    def cpu_view(self, slot: int, key: bytes) -> memoryview | None:
        """Writable view of CPU slot ``slot``, leased or reserved for ``key`` (consumes that
        grant). ``None`` when the tier cannot be mapped from here, the daemon is down, or the
        slot was handed out under an earlier registration (counted in ``stale_slots``)."""
        if not self.mapped:
            return None
        generation = self._current_grant(key, slot)
        return None if generation is None else self._view(slot, generation)

    def reserved_views(self, pairs: Sequence[tuple[bytes, int]]) -> list[memoryview | None]:
        """Views of the CPU slots reserved for ``(key, slot)`` (demotions, write-through), to
        copy into and then COMMIT. ``None`` where the slot is stale or cannot be written; a
        reservation of the current registration left unfilled is owed back (next :meth:`tick`)."""
        views: list[memoryview | None] = []
        for key, slot in pairs:
            generation = self._current_grant(key, slot)
            view = None if generation is None else self._view(slot, generation)
            if generation is not None and view is None:
                self._owe(key, generation)
            views.append(view)
        return views

    def _current_grant(self, key: bytes, slot: int) -> int | None:
        """The generation ``slot`` was granted in for ``key``, if it is the current one."""
        generation = self.grants.take(key, slot)
        if generation is None or generation != self.client.generation:
            self.stale_slots += 1
            return None
        return generation

    def _view(self, slot: int, generation: int) -> memoryview | None:
        if not self.mapped:
            return None
        nbytes = self.layout.bytes_per_block
        try:
            return self._guard(
                lambda: self.client.cpu_slot(slot, generation=generation)[:nbytes], None)
        except (OSError, ValueError) as e:  # no such segment here: the daemon is on another host
            log.info("CPU tier of %s is not mappable here (%s); using GET/PUT", self.endpoint, e)
            self.mapped = False
            return None

    def abandon(self, pairs: Sequence[tuple[bytes, int]]) -> None:
        """Reservations ``(key, slot)`` the engine will not fill (e.g. a victim whose slot holds
        another block by now): owed back if they belong to the current registration."""
        for key, slot in pairs:
            if self.grants.take(key, slot) == self.client.generation:
                self._owe(key, self.client.generation)


def batches(items: Sequence[T], size: int) -> list[list[T]]:
    """``items`` in lists of at most ``size`` (requests under the daemon's per-request
    limits)."""
    return [list(items[i:i + size]) for i in range(0, len(items), size)]
