"""The residency manager: every change of where a block lives goes through :class:`Residency`.

Below the engines' GPU pools the daemon's tiers form a :class:`~asymcache.cacheserver.chain.
TierChain` (``levels.py`` builds it from configuration: CPU, then disk, then the remote
tier); the chain places, evicts, demotes, writes through and tells policies their backing,
the same code the simulator runs. What is specific to the daemon stays here: GPU slots belong
to the engines, so the daemon only records which key sits in which slot and, on ALLOCATE, names
victims and reserves slots in the top level (CPU) for the engines to demote them into; a
reserved slot becomes readable when the engine confirms the copy.

Every method runs on the event loop thread and never blocks on I/O except the tiers' own
(batched, background) writes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from asymcache.cacheserver.chain import ChainEvents, Level, TierChain
from asymcache.cacheserver.config import QuotaSection
from asymcache.cacheserver.engine_costs import EngineCosts
from asymcache.cacheserver.events import EventLog, NoEvents
from asymcache.cacheserver.index import BlockIndex, BlockRecord
from asymcache.cacheserver.leases import EngineSession, SessionTable
from asymcache.cacheserver.levels import header_of
from asymcache.cacheserver.metrics import DIRECTIONS, DaemonMetrics
from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.cacheserver.tenants import TenantBook
from asymcache.tiers.base import Buffer, Tier
from asymcache.tiers.cpu import CpuTier


class Residency(ChainEvents):
    """Placement, eviction, demotion and promotion across the engines' GPU pools (index only)
    and the tier chain's levels."""

    def __init__(self, index: BlockIndex, sessions: SessionTable, levels: list[Level],
                 metrics: DaemonMetrics, clock: Callable[[], float],
                 capacity: dict[str, int], bound: dict[str, int],
                 tenants: TenantBook | None = None, costs: EngineCosts | None = None) -> None:
        self.index, self.sessions, self.metrics, self.clock = index, sessions, metrics, clock
        self.tenants = tenants if tenants is not None else TenantBook(QuotaSection(), None)
        self.costs = costs if costs is not None else EngineCosts(None, 1 << 16)
        for level in levels:  # each block priced with its own engine's cost model
            level.policy.set_namespace_costs(self.costs.by_ns)
        self.chain = TierChain(levels, index.get, index.discard_if_unheld, self,
                               quota=self.tenants if self.tenants.limits else None)
        self.signal_counts: Counter[str] = Counter()  # SIGNAL kind -> count (metrics.py)
        self.top = levels[0]  # engines demote into it and fetch from it (the CPU tier)
        self.cpu: CpuTier = self.top.store.tier  # type: ignore[attr-defined]
        self.policies = {level.name: level.policy for level in levels}
        self.max_blocks, self.bound_blocks = capacity, bound
        self.events: EventLog | NoEvents = NoEvents()  # KV events (events.py) when configured
        # LOOKUP's Where code per ``where`` mask: the highest level holding it (``local``:
        # not counting levels shared with other hosts, reported only when asked)
        self.codes = [self._code(mask, True) for mask in range(1 << len(levels))]
        self.local_codes = [self._code(mask, False) for mask in range(1 << len(levels))]

    def _code(self, mask: int, shared: bool) -> int:
        held = [lv for lv in self.chain.levels if mask & lv.bit and (shared or not lv.shared)]
        return held[0].code if held else 0

    def tier(self, name: str) -> Tier | None:
        level = self.chain.level(name)
        return None if level is None else level.store.tier  # type: ignore[attr-defined]

    def holds(self, rec: BlockRecord, name: str) -> bool:
        return self.chain.holds(rec, name)

    # ---- GPU (index only) ---------------------------------------------------------------
    def gpu_commit(self, session: EngineSession, rec: BlockRecord, slot: int) -> None:
        """``rec`` now sits in ``slot`` of the engine's pool (replacing whatever was there)."""
        old = session.slot_keys.get(slot)
        if old is not None and old != rec.key:
            self.gpu_forget(session, slot)
        prev = session.key_slots.get(rec.key)
        if prev is not None and prev != slot:
            self.gpu_forget(session, prev)
        if old != rec.key:
            self.events.stored("gpu", rec, session.engine_id)
        session.slot_keys[slot] = rec.key
        session.key_slots[rec.key] = slot
        if session.engine_id not in rec.gpu:
            rec.gpu = (*rec.gpu, session.engine_id)
        now = self.clock()
        session.gpu_policy.insert(rec.info(), now)
        top = self.chain.top(rec)
        session.gpu_policy.set_backing(rec.key, None if top is None else top.name)
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
            self.events.removed("gpu", key, rec.namespace, session.engine_id)
            rec.gpu = _without(rec.gpu, session.engine_id)
            self.index.discard_if_unheld(rec)
        return key

    def gpu_victims(self, session: EngineSession, n: int, demote: bool = True,
                    ahead: bool = False) -> list[tuple[int, bytes, int]]:
        """Up to ``n`` unleased blocks the engine should give up: ``(gpu_slot, key, cpu_slot)``
        where ``cpu_slot`` (-1 = none; always with ``demote=False``) is reserved for the engine
        to demote the bytes into. ``ahead`` (named before the engine needs the slots): the
        blocks stay indexed in the engine's slots, out of its policy (never named twice), until
        the engine commits another block to the slot (it gave the victim up) or this one again
        (it kept it)."""
        out = []
        now = self.clock()
        for key in session.gpu_policy.victims(n, now):
            slot = session.key_slots[key] if ahead else session.key_slots.pop(key)
            rec = self.index.get(key)
            assert rec is not None, "a GPU-resident block must be indexed"
            if not ahead:
                del session.slot_keys[slot]
                self.events.removed("gpu", key, rec.namespace, session.engine_id)
                rec.gpu = _without(rec.gpu, session.engine_id)
            demote_to = -1
            if (demote and rec.cpu < 0 and rec.cpu_pending < 0
                    and self.top.policy.admit(rec.info(), now)):
                demote_to = self.cpu_reserve(rec, session)
            self.metrics.evictions["gpu"].inc()
            if demote_to >= 0:
                self.metrics.demotions["gpu"].inc()
            self.index.discard_if_unheld(rec)
            out.append((slot, key, demote_to))
        return out

    # ---- CPU reservations (the top level's filling slots) -------------------------------
    def cpu_reserve(self, rec: BlockRecord, session: EngineSession | None) -> int:
        """A ``FILLING`` CPU slot for ``rec`` (evicting if needed), or -1 if none can be had."""
        if (rec.n_bytes > self.cpu.slot_bytes
                or not self.chain.make_room(self.top, rec, self.clock())):
            return -1
        slot = self.cpu.reserve(rec.key, header_of(rec))
        if slot is None:
            return -1
        rec.cpu_pending = slot
        rec.cpu_owner = session.engine_id if session is not None else ""
        if session is not None:
            session.reservations.add(rec.key)
        return slot

    def cpu_confirm(self, rec: BlockRecord, session: EngineSession | None, slot: int,
                    checksum: int = 0) -> bool:
        """The bytes of the reserved ``slot`` are written: make the block readable; its reads
        are checked against ``checksum`` (the writer's; 0 = computed from the slot now)."""
        owner = session.engine_id if session is not None else ""
        if rec.cpu_pending != slot or rec.cpu_owner != owner:
            return False
        self.cpu.confirm(rec.key, header_of(rec, checksum))
        if session is not None:
            session.reservations.discard(rec.key)
        rec.cpu, rec.cpu_pending, rec.cpu_owner = slot, -1, ""
        self.chain.entered(self.top, rec, self.clock())
        return True

    def cpu_abort(self, rec: BlockRecord, session: EngineSession | None) -> None:
        """Give back the CPU slot reserved for ``rec`` (if any)."""
        if rec.cpu_pending >= 0:
            self.cpu.abort(rec.key)
            rec.cpu_pending, rec.cpu_owner = -1, ""
        if session is not None:
            session.reservations.discard(rec.key)
        self.index.discard_if_unheld(rec)

    # ---- any level ----------------------------------------------------------------------
    def store(self, name: str, rec: BlockRecord, data: Buffer | None) -> bool:
        """Put ``data`` into level ``name`` (evicting as needed; ``None`` = adopt a block the
        tier holds already); ``False`` if refused or there is no such level."""
        level = self.chain.level(name)
        return level is not None and self.chain.place(level, rec, data, self.clock(), False)

    def read(self, name: str, rec: BlockRecord) -> Buffer | None:
        """The block's bytes in level ``name``, or ``None`` (absent, or failed its checks:
        then forgotten there)."""
        level = self.chain.level(name)
        if level is None or not rec.where & level.bit:
            return None
        data = level.store.read(rec)
        if data is None:
            self.forget(name, rec.key)
        return data

    def promote(self, rec: BlockRecord) -> str | None:
        """Copy ``rec`` from the highest local level holding it into the top level; the name
        of the level it came from, or None (already there, nowhere local, or no room)."""
        src = self.chain.top(rec)
        if src is None or src is self.top or src.shared or rec.cpu_pending >= 0:
            return None
        data = self.read(src.name, rec)
        return src.name if data is not None and self.store(self.top.name, rec, data) else None

    def forget(self, name: str, key: bytes) -> None:
        """Drop ``key`` from level ``name`` (not an eviction: gone, or failed)."""
        level = self.chain.level(name)
        if level is not None:
            self.chain.leave(level, key, self.clock(), evicted=False)

    def poll_failures(self) -> list[bytes]:
        """Forget blocks whose queued writes failed (or were found corrupt); their keys."""
        return self.chain.forget_failed(self.clock())

    def load_figures(self, name: str) -> tuple[float, float] | None:
        """``(latency_s, bandwidth_bps)`` of a load from level ``name`` when its tier measures
        or is configured with them (the remote tier), else None."""
        figures = getattr(self.tier(name), "load_figures", None)
        return None if figures is None else figures()

    # ---- chain events -------------------------------------------------------------------
    def entered(self, level: Level, block: BlockRecord) -> None:  # type: ignore[override]
        self.tenants.entered(level.name, block)
        self.events.stored(level.name, block)

    def left(self, level: Level, block: BlockRecord) -> None:  # type: ignore[override]
        self.tenants.left(level.name, block)
        self.events.removed(level.name, block.key, block.namespace)

    def evicted(self, level: Level, block: object) -> None:
        self.metrics.evictions[level.name].inc()

    def demoted(self, level: Level, block: object) -> None:
        self.metrics.demotions[level.name].inc()

    def copied(self, src: Level, dst: Level, block: BlockRecord) -> None:  # type: ignore[override]
        direction = f"{src.name}_to_{dst.name}"
        if direction in DIRECTIONS:
            self.metrics.moved[direction].inc(block.n_bytes)

    def backing(self, block: BlockRecord, top: str | None) -> None:  # type: ignore[override]
        """Tell each engine's GPU policy the highest level that still holds ``block``."""
        for policy in self._gpu_policies(block):
            policy.set_backing(block.key, top)

    def pinned(self, block: BlockRecord, until: float | None, now: float,  # type: ignore[override]
               on: bool) -> None:
        for policy in self._gpu_policies(block):
            if on:
                policy.pin(block.key, until)
            else:
                policy.unpin(block.key, now)

    def signalled(self, block: BlockRecord, now: float) -> None:  # type: ignore[override]
        for policy in self._gpu_policies(block):
            policy.resignal(block.key, now)

    def session_ended(self, session: object, now: float) -> None:
        for engine in self.sessions:
            engine.gpu_policy.session_ended(session, now)  # type: ignore[arg-type]

    def _gpu_policies(self, block: BlockRecord) -> list[ResidencyPolicy]:
        sessions = [self.sessions.by_engine(engine_id) for engine_id in block.gpu]
        return [s.gpu_policy for s in sessions if s is not None]


def _without(engines: tuple[str, ...], engine_id: str) -> tuple[str, ...]:
    """``engines`` less ``engine_id`` (``()`` shared when none is left)."""
    return tuple(e for e in engines if e != engine_id) if engines != (engine_id,) else ()
