"""Tier movers: every change of where a block lives goes through :class:`Residency`.

It owns the CPU, DISK and REMOTE tiers and their policies, keeps the :class:`BlockIndex` in step
with them, and makes room when a tier is full: the tier's policy names a victim, a CPU victim is
demoted to disk and to the remote tier first (each when it does not hold it yet and its policy
admits it), a disk victim is dropped; the remote tier's part is in ``movers_remote.py``. GPU
slots belong to the engines: here the daemon only records which key sits in which slot and, on
ALLOCATE, names victims and reserves CPU slots to demote them to.

Every method runs on the event loop thread and never blocks on I/O except the disk tier's own
(batched, background) writes; ``DiskWaiter`` turns "durable" into an awaitable.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from asymcache.cacheserver.index import BlockIndex, BlockRecord
from asymcache.cacheserver.leases import EngineSession, SessionTable
from asymcache.cacheserver.metrics import DaemonMetrics
from asymcache.cacheserver.movers_remote import RemoteMoves, header_of
from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.tiers.base import BlockHeader, Buffer, Tier
from asymcache.tiers.cpu import CpuTier

if TYPE_CHECKING:
    from asymcache.tiers.remote import RemoteTier

log = logging.getLogger(__name__)


class Residency(RemoteMoves):
    """Placement, eviction, demotion and promotion across GPU (index only), CPU, DISK and
    REMOTE (the remote tier's part is in ``movers_remote.py``)."""

    def __init__(self, index: BlockIndex, sessions: SessionTable, cpu: CpuTier,
                 disk: Tier | None, policies: dict[str, ResidencyPolicy], metrics: DaemonMetrics,
                 clock: Callable[[], float], write_through: bool = False,
                 remote: RemoteTier | None = None, remote_write_through: bool = True) -> None:
        self.index = index
        self.sessions = sessions
        self.cpu = cpu
        self.disk = disk
        self.remote = remote
        self.policies = policies  # "cpu" and, with a disk, "disk", with a remote tier "remote"
        self.metrics = metrics
        self.clock = clock
        self.write_through = write_through
        self.remote_write_through = remote_write_through
        self.max_blocks, self.bound_blocks = tier_capacities(cpu, disk, remote)

    # ---- GPU (index only) ---------------------------------------------------------------
    def gpu_commit(self, session: EngineSession, rec: BlockRecord, slot: int) -> None:
        """``rec`` now sits in ``slot`` of the engine's pool (replacing whatever was there)."""
        old = session.slot_keys.get(slot)
        if old is not None and old != rec.key:
            self.gpu_forget(session, slot)
        prev = session.key_slots.get(rec.key)
        if prev is not None and prev != slot:
            self.gpu_forget(session, prev)
        session.slot_keys[slot] = rec.key
        session.key_slots[rec.key] = slot
        if session.engine_id not in rec.gpu:
            rec.gpu = (*rec.gpu, session.engine_id)
        now = self.clock()
        session.gpu_policy.insert(rec.info(), now)
        session.gpu_policy.set_backing(rec.key, rec.next_tier("gpu"))
        if rec.pin_active(now):
            session.gpu_policy.pin(rec.key, rec.pin_until)

    def gpu_forget(self, session: EngineSession, slot: int) -> bytes | None:
        """Forget what sits in ``slot`` (the engine reuses it, or the engine went away)."""
        key = session.slot_keys.pop(slot, None)
        if key is None:
            return None
        session.key_slots.pop(key, None)
        session.gpu_policy.remove(key)
        rec = self.index.get(key)
        if rec is not None:
            rec.gpu = _without(rec.gpu, session.engine_id)
            self.index.discard_if_unheld(rec)
        return key

    def gpu_victims(self, session: EngineSession, n: int, demote: bool = True
                    ) -> list[tuple[int, bytes, int]]:
        """Up to ``n`` unleased blocks the engine should give up: ``(gpu_slot, key, cpu_slot)``
        where ``cpu_slot`` (-1 = none; always with ``demote=False``) is reserved for the engine
        to demote the bytes into."""
        out = []
        now = self.clock()
        for key in session.gpu_policy.victims(n, now):
            slot = session.key_slots.pop(key)
            del session.slot_keys[slot]
            rec = self.index.get(key)
            assert rec is not None, "a GPU-resident block must be indexed"
            rec.gpu = _without(rec.gpu, session.engine_id)
            demote_to = -1
            if (demote and rec.cpu < 0 and rec.cpu_pending < 0
                    and self.policies["cpu"].admit(rec.info(), now)):
                demote_to = self.cpu_reserve(rec, session)
            self.metrics.evictions["gpu"].inc()
            if demote_to >= 0:
                self.metrics.demotions["gpu"].inc()
            self.index.discard_if_unheld(rec)
            out.append((slot, key, demote_to))
        return out

    # ---- CPU ----------------------------------------------------------------------------
    def cpu_reserve(self, rec: BlockRecord, session: EngineSession | None) -> int:
        """A ``FILLING`` CPU slot for ``rec`` (evicting if needed), or -1 if none can be had."""
        if rec.n_bytes > self.cpu.slot_bytes or not self._cpu_room(rec):
            return -1
        slot = self.cpu.reserve(rec.key, header_of(rec))
        if slot is None:
            return -1
        rec.cpu_pending = slot
        rec.cpu_owner = session.engine_id if session is not None else ""
        if session is not None:
            session.reservations.add(rec.key)
        return slot

    def cpu_confirm(self, rec: BlockRecord, session: EngineSession | None, slot: int) -> bool:
        """The bytes of the reserved ``slot`` are written: make the block readable."""
        owner = session.engine_id if session is not None else ""
        if rec.cpu_pending != slot or rec.cpu_owner != owner:
            return False
        self.cpu.confirm(rec.key)
        if session is not None:
            session.reservations.discard(rec.key)
        rec.cpu, rec.cpu_pending, rec.cpu_owner = slot, -1, ""
        self._cpu_entered(rec)
        if self.write_through and not rec.disk:
            self.disk_store(rec, self.cpu.get([rec.key])[0])
        return True

    def cpu_abort(self, rec: BlockRecord, session: EngineSession | None) -> None:
        if rec.cpu_pending >= 0:
            self.cpu.abort(rec.key)
            rec.cpu_pending, rec.cpu_owner = -1, ""
        if session is not None:
            session.reservations.discard(rec.key)
        self.index.discard_if_unheld(rec)

    def cpu_store(self, rec: BlockRecord, data: Buffer) -> bool:
        """Copy ``data`` into a CPU slot (evicting if needed); ``False`` if there is no room."""
        if rec.cpu >= 0:
            return True
        if rec.cpu_pending >= 0 or not self._cpu_room(rec):
            return False
        if not self.cpu.put([(rec.key, header_of(rec), data)])[0]:
            return False
        slot = self.cpu.slot_of(rec.key)
        assert slot is not None
        rec.cpu = slot
        self._cpu_entered(rec)
        return True

    def cpu_read(self, rec: BlockRecord) -> bytes | None:
        """A copy of the block's CPU bytes (safe to send after the slot is reused)."""
        if rec.cpu < 0:
            return None
        view = self.cpu.get([rec.key])[0]
        return None if view is None else bytes(view)

    def _cpu_entered(self, rec: BlockRecord) -> None:
        now = self.clock()
        policy = self.policies["cpu"]
        policy.insert(rec.info(), now)
        policy.set_backing(rec.key, rec.next_tier("cpu"))
        if rec.pin_active(now):
            policy.pin(rec.key, rec.pin_until)
        self._refresh_gpu_backing(rec)
        if self.remote_write_through:
            self.remote_copy(rec)

    def _refresh_gpu_backing(self, rec: BlockRecord) -> None:
        """Tell each engine's GPU policy the next tier that still holds ``rec``."""
        for engine_id in rec.gpu:
            session = self.sessions.by_engine(engine_id)
            if session is not None:
                session.gpu_policy.set_backing(rec.key, rec.next_tier("gpu"))

    def _cpu_room(self, rec: BlockRecord) -> bool:
        """Make one CPU slot free for ``rec``, demoting the policy's victims; ``False`` if every
        slot is held. ``rec`` stays indexed meanwhile, even if a demotion evicts it from disk."""
        rec.busy += 1
        try:
            while self.cpu.free_slots == 0:
                victim = self.policies["cpu"].evict(self.clock())
                if victim is None:
                    return False
                self._cpu_drop(victim, demote=True)
            return True
        finally:
            rec.busy -= 1

    def _cpu_drop(self, key: bytes, demote: bool) -> None:
        rec = self.index.get(key)
        if rec is None or rec.cpu < 0:
            self.cpu.delete([key])
            return
        demoted = False
        if demote and self._disk_admits(rec):
            view = self.cpu.get([key])[0]
            if view is not None and self.disk_store(rec, view):
                demoted = True
                self.metrics.moved["cpu_to_disk"].inc(rec.n_bytes)
        if demote and self.remote_copy(rec):
            demoted = True
        if demoted:
            self.metrics.demotions["cpu"].inc()
        self.cpu.delete([key])
        rec.cpu = -1
        self.metrics.evictions["cpu"].inc()
        self._refresh_gpu_backing(rec)
        self.index.discard_if_unheld(rec)

    # ---- DISK ---------------------------------------------------------------------------
    def _disk_admits(self, rec: BlockRecord) -> bool:
        return (self.disk is not None and not rec.disk
                and self.policies["disk"].admit(rec.info(), self.clock()))

    def disk_store(self, rec: BlockRecord, data: Buffer) -> bool:
        """Queue ``data`` for the disk (evicting by bytes if needed); ``False`` if refused."""
        if self.disk is None:
            return False
        if rec.disk:
            return True
        header = header_of(rec)
        need = self.disk.entry_bytes(header)
        if need > self.disk.capacity_bytes:
            return False
        policy = self.policies["disk"]
        while self.disk.used_bytes + need > self.disk.capacity_bytes:
            victim = policy.evict(self.clock())
            if victim is None:
                return False
            self.disk_forget(victim, evicted=True)
        if not self.disk.put([(rec.key, header, data)])[0]:
            return False
        rec.disk = True
        now = self.clock()
        policy.insert(rec.info(), now)
        if rec.pin_active(now):
            policy.pin(rec.key, rec.pin_until)
        self.refresh_backing(rec)
        return True

    def disk_read(self, rec: BlockRecord) -> Buffer | None:
        """The block's disk bytes, or ``None`` (absent, or failed its checks: then forgotten)."""
        if self.disk is None or not rec.disk:
            return None
        data = self.disk.get([rec.key])[0]
        if data is None:
            self.disk_forget(rec.key, evicted=False)
        return data

    def disk_forget(self, key: bytes, evicted: bool) -> None:
        """Drop ``key`` from the disk tier, its policy and the index."""
        assert self.disk is not None
        self.disk.delete([key])
        self.policies["disk"].remove(key)
        rec = self.index.get(key)
        if rec is not None and rec.disk:
            rec.disk = False
            self.refresh_backing(rec)
            self.index.discard_if_unheld(rec)
        if evicted:
            self.metrics.evictions["disk"].inc()

    def poll_disk_failures(self) -> list[bytes]:
        """Forget blocks whose queued disk writes failed (or were found corrupt); their keys."""
        if self.disk is None:
            return []
        failed = self.disk.take_failed()
        for key in failed:
            self.disk_forget(key, evicted=False)
        return failed


def tier_capacities(cpu: CpuTier, disk: Tier | None, remote: Tier | None
                    ) -> tuple[dict[str, int], dict[str, int]]:
    """``(capacity, bound)`` in blocks per tier (``cpu``, and ``disk``/``remote`` when open).

    ``capacity`` sizes the policies and is what STATS and ``asymcache_tier_capacity_blocks``
    report: the tier's bytes over the entry of the largest block the daemon accepts (one CPU
    slot), so a tier full of such blocks shows 100%. ``bound`` is the most blocks of any size
    the tier can hold (its bytes over the entry of an empty block): only the index is sized by
    it, so it never refuses a block the tiers have room for."""
    largest = BlockHeader(bytes(16), bytes(16), 0, "", cpu.slot_bytes, 0)
    empty = BlockHeader(bytes(16), bytes(16), 0, "", 0, 0)
    capacity, bound = {"cpu": cpu.capacity_blocks}, {"cpu": cpu.capacity_blocks}
    for name, tier in (("disk", disk), ("remote", remote)):
        if tier is not None:
            capacity[name] = tier.capacity_bytes // tier.entry_bytes(largest)
            bound[name] = tier.capacity_bytes // tier.entry_bytes(empty)
    return capacity, bound


def _without(engines: tuple[str, ...], engine_id: str) -> tuple[str, ...]:
    """``engines`` less ``engine_id`` (``()`` shared when none is left)."""
    return tuple(e for e in engines if e != engine_id) if engines != (engine_id,) else ()
