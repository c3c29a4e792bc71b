"""The CPU tier: one shared-memory slab of fixed-size, block-major slots, owned by the daemon.

The slab holds ``num_slots = capacity_bytes // slot_bytes`` slots (see ``tiers/shm.py``). Every
block occupies one whole slot, whatever its length (at most ``slot_bytes``). A slot is free,
``FILLING`` or ``READY``:

* the key-level API (``put``/``get``/``delete``) copies bytes in and makes them ``READY`` at
  once, with the checksum of the bytes put;
* integrity: every ``READY`` block's header carries the xxh3-64 checksum of its bytes (from the
  engine that filled the slot, given to ``confirm``, or computed here). Engines map the slab
  writable, so a slot's bytes can change after that; ``get`` therefore copies the slot out and
  checks the *copy* (a concurrent overwrite cannot slip in after the check): a mismatch is a
  miss, counted as error kind ``checksum`` and reported once by ``take_failed`` (the daemon then
  forgets the block). ``checksums`` tells readers that copy the slot themselves what to expect;
* the slot API lets an engine that mapped the slab (``asymcache.tiers.shm.attach``) copy bytes
  itself:
  ``reserve`` gives a ``FILLING`` slot, which ``get``/``contains``/``slot_of``/``headers`` never
  report, ``confirm`` makes it ``READY`` (with the checksum of the bytes the engine wrote, or
  one computed from the slot then) and ``abort`` frees it.

Memory is fixed at creation; the tier never allocates block memory afterwards. Closing the tier
unlinks the segment. Metadata is guarded by a lock, so copies may run in worker threads.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from asymcache.tiers.base import BlockHeader, Buffer, Tier, check_key, checksum, register_tier
from asymcache.tiers.shm import Slab, create_slab


@dataclass(frozen=True)
class CpuTierConfig:
    """``capacity_bytes`` of slab in slots of ``slot_bytes``; ``shm_name`` None = generated;
    ``populate`` commits every page at creation."""

    capacity_bytes: int
    slot_bytes: int
    shm_name: str | None = None
    populate: bool = False

    def __post_init__(self) -> None:
        for field in ("capacity_bytes", "slot_bytes"):
            value = getattr(self, field)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"CpuTierConfig.{field} must be a positive int, got {value!r}")
        if self.capacity_bytes < self.slot_bytes:
            raise ValueError(f"CpuTierConfig.capacity_bytes ({self.capacity_bytes}) holds no slot "
                             f"of slot_bytes={self.slot_bytes}")
        if self.shm_name is not None and not (isinstance(self.shm_name, str) and self.shm_name):
            raise ValueError(f"CpuTierConfig.shm_name must be a non-empty str or None, "
                             f"got {self.shm_name!r}")

    @property
    def num_slots(self) -> int:
        return self.capacity_bytes // self.slot_bytes


@dataclass(slots=True)
class _Entry:
    slot: int
    header: BlockHeader
    ready: bool


@register_tier("cpu")
class CpuTier(Tier):
    """Shared-memory slab tier. See the module docstring for slot states and view lifetimes."""

    def __init__(self, capacity_bytes: int, slot_bytes: int, shm_name: str | None = None,
                 populate: bool = False) -> None:
        self.config = CpuTierConfig(capacity_bytes, slot_bytes, shm_name, populate)
        self._slab: Slab = create_slab(slot_bytes, self.config.num_slots, shm_name, populate)
        self._free = list(range(self.config.num_slots - 1, -1, -1))  # pop() → lowest slot
        self._entries: dict[bytes, _Entry] = {}
        self._ready = 0
        self._lock = threading.Lock()
        self._failed: list[bytes] = []  # READY blocks whose bytes no longer match (take_failed)
        self._errors = 0  # checksum mismatches seen by ``get``

    # -- geometry ---------------------------------------------------------------------------
    @property
    def shm_name(self) -> str:
        """Name engines pass to ``asymcache.tiers.shm.attach``."""
        return self._slab.name

    @property
    def slot_bytes(self) -> int:
        return self._slab.slot_bytes

    @property
    def num_slots(self) -> int:
        return self._slab.num_slots

    @property
    def free_slots(self) -> int:
        return len(self._free)

    @property
    def capacity_blocks(self) -> int:
        return self.num_slots

    @property
    def capacity_bytes(self) -> int:
        return self.num_slots * self.slot_bytes

    @property
    def used_bytes(self) -> int:
        """Bytes of slots taken, ``FILLING`` ones included."""
        return (self.num_slots - len(self._free)) * self.slot_bytes

    def entry_bytes(self, header: BlockHeader) -> int:
        return self.slot_bytes

    def __len__(self) -> int:
        return self._ready

    def slot_view(self, slot: int) -> memoryview:
        """Writable view of a whole slot, for daemon-side copies into a reserved slot."""
        return self._slab.slot(slot)

    # -- slot API ---------------------------------------------------------------------------
    def reserve(self, key: bytes, header: BlockHeader) -> int | None:
        """Take a free slot for ``key`` in state ``FILLING`` and return its index; ``None`` if
        the key is already held (in any state), no slot is free or the block is too large."""
        check_key(key)
        if header.length > self.slot_bytes:
            return None
        with self._lock:
            if key in self._entries or not self._free:
                return None
            slot = self._free.pop()
            self._entries[key] = _Entry(slot, header, ready=False)
            return slot

    def confirm(self, key: bytes, header: BlockHeader | None = None) -> int:
        """``FILLING`` → ``READY`` (optionally replacing the header); returns the slot. The
        header's checksum is the one reads are checked against: 0 (not given) = computed here
        from the slot's bytes now. ``KeyError`` if ``key`` has no ``FILLING`` slot."""
        with self._lock:
            entry = self._filling(key)
            if header is not None:
                if header.length > self.slot_bytes:
                    raise ValueError(f"header.length {header.length} exceeds the slot size "
                                     f"{self.slot_bytes}")
                entry.header = header
            if entry.header.checksum == 0:
                entry.header = replace(entry.header, checksum=checksum(self._payload(entry)))
            entry.ready = True
            self._ready += 1
            return entry.slot

    def abort(self, key: bytes) -> bool:
        """Free the ``FILLING`` slot of ``key``; ``False`` if it had none (a ``READY`` block is
        left alone: use ``delete``)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry.ready:
                return False
            del self._entries[key]
            self._free.append(entry.slot)
            return True

    def checksums(self, keys: Sequence[bytes]) -> list[int]:
        """The checksum each ``READY`` block's bytes must have, else 0."""
        entries = self._entries
        return [e.header.checksum if (e := entries.get(k)) is not None and e.ready else 0
                for k in keys]

    def slot_of(self, key: bytes) -> int | None:
        """Slot of a ``READY`` block, else ``None``."""
        entry = self._entries.get(key)
        return entry.slot if entry is not None and entry.ready else None

    def _filling(self, key: bytes) -> _Entry:
        entry = self._entries.get(key)
        if entry is None or entry.ready:
            state = "absent" if entry is None else "READY"
            raise KeyError(f"block {key.hex()} has no FILLING slot (it is {state})")
        return entry

    # -- key API ----------------------------------------------------------------------------
    def put(self, items: Sequence[tuple[bytes, BlockHeader, Buffer]],
            durable: bool = False) -> list[bool]:
        """Copy each payload into a free slot, ``READY`` at once. ``durable`` has no meaning for
        memory and is ignored. ``False`` = no free slot, too large, or the key is ``FILLING``."""
        return [self._put_one(key, header, payload) for key, header, payload in items]

    def _put_one(self, key: bytes, header: BlockHeader, payload: Buffer) -> bool:
        view = memoryview(payload).cast("B")
        if view.nbytes != header.length:
            raise ValueError(f"payload of block {check_key(key).hex()} is {view.nbytes} bytes "
                             f"but header.length is {header.length}")
        if key in self._entries:
            return self._entries[key].ready
        slot = self.reserve(key, header)
        if slot is None:
            return False
        start = slot * self.slot_bytes
        self._slab.buffer[start:start + view.nbytes] = view
        self.confirm(key, replace(header, checksum=checksum(view)))  # of the caller's bytes
        return True

    def get(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        """A private copy of each ``READY`` payload (``header.length`` bytes) whose bytes match
        its checksum, else None (absent, ``FILLING``, or changed since: counted and reported
        by :meth:`take_failed`)."""
        out: list[Buffer | None] = []
        for key in keys:
            entry = self._entries.get(key)
            if entry is None or not entry.ready:
                out.append(None)
                continue
            data = bytes(self._payload(entry))
            if checksum(data) != entry.header.checksum:
                self._errors += 1
                self._failed.append(key)
                out.append(None)
                continue
            out.append(data)
        return out

    def _payload(self, entry: _Entry) -> memoryview:
        start = entry.slot * self.slot_bytes
        return self._slab.buffer[start:start + entry.header.length]

    def take_failed(self) -> list[bytes]:
        """Keys whose bytes failed their checksum in :meth:`get`, each reported once."""
        failed, self._failed = self._failed, []
        return failed

    def error_counts(self) -> dict[str, int]:
        return {"checksum": self._errors} if self._errors else {}

    def contains(self, keys: Sequence[bytes]) -> list[bool]:
        entries = self._entries
        return [(e := entries.get(k)) is not None and e.ready for k in keys]

    def delete(self, keys: Sequence[bytes]) -> int:
        """Free the slots of ``READY`` blocks; ``FILLING`` ones are left to ``abort``."""
        removed = 0
        with self._lock:
            for key in keys:
                entry = self._entries.get(key)
                if entry is None or not entry.ready:
                    continue
                del self._entries[key]
                self._free.append(entry.slot)
                self._ready -= 1
                removed += 1
        return removed

    def headers(self) -> Iterator[tuple[bytes, BlockHeader]]:
        with self._lock:
            held = [(k, e.header) for k, e in self._entries.items() if e.ready]
        return iter(held)

    def close(self) -> None:
        """Unmap and unlink the slab; views still held elsewhere keep their mapping alive."""
        with self._lock:
            self._entries.clear()
            self._free.clear()
            self._ready = 0
        self._slab.close()
