"""The daemon's tiers as :class:`~asymcache.cacheserver.chain.Level` stores (:class:`SlotStore`
for the CPU slab, :class:`ByteStore` for any tier bounded by bytes), and the levels built from
configuration (:func:`daemon_levels`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from asymcache.cacheserver.chain import Level
from asymcache.cacheserver.index import BlockRecord
from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.cacheserver.protocol import Where
from asymcache.tiers.base import BlockHeader, Buffer, Tier
from asymcache.tiers.cpu import CpuTier

if TYPE_CHECKING:
    from asymcache.cacheserver.config import ServerConfig


def header_of(rec: BlockRecord, checksum: int = 0) -> BlockHeader:
    """The tier header of ``rec`` (checksum 0 = computed by the tier that verifies bytes)."""
    return BlockHeader(rec.namespace, rec.parent_or_root, rec.position, rec.layout, rec.n_bytes,
                       checksum)


class SlotStore:
    """The CPU tier: one shared-memory slot per block, readable once ``rec.cpu`` is set
    (``rec.cpu_pending``: a reserved slot an engine is filling)."""

    def __init__(self, tier: CpuTier) -> None:
        self.tier = tier

    def fits(self, rec: BlockRecord) -> bool:
        return rec.cpu_pending < 0 and rec.n_bytes <= self.tier.slot_bytes

    def full(self, rec: BlockRecord) -> bool:
        return self.tier.free_slots == 0

    def put(self, rec: BlockRecord, data: Buffer) -> bool:
        if not self.tier.put([(rec.key, header_of(rec), data)])[0]:
            return False
        slot = self.tier.slot_of(rec.key)
        assert slot is not None
        rec.cpu = slot
        return True

    def read(self, rec: BlockRecord) -> Buffer | None:
        return self.tier.get([rec.key])[0] if rec.cpu >= 0 else None

    def drop(self, key: bytes, rec: BlockRecord | None) -> None:
        self.tier.delete([key])
        if rec is not None:
            rec.cpu = -1

    def take_failed(self) -> list[bytes]:
        return self.tier.take_failed()


class ByteStore:
    """A tier bounded by bytes (disk, remote); one with ``ready`` (the remote cluster) takes
    nothing while unreachable; ``data=None`` adopts a block another host stored."""

    def __init__(self, tier: Tier) -> None:
        self.tier = tier

    def fits(self, rec: BlockRecord) -> bool:
        return (getattr(self.tier, "ready", True)
                and self.tier.entry_bytes(header_of(rec)) <= self.tier.capacity_bytes)

    def full(self, rec: BlockRecord) -> bool:
        tier = self.tier
        return tier.used_bytes + tier.entry_bytes(header_of(rec)) > tier.capacity_bytes

    def put(self, rec: BlockRecord, data: Buffer | None) -> bool:
        if data is None:
            return self.tier.adopt([(rec.key, header_of(rec))])[0]  # type: ignore[attr-defined]
        return self.tier.put([(rec.key, header_of(rec), data)])[0]

    def read(self, rec: BlockRecord) -> Buffer | None:
        return self.tier.get([rec.key])[0]

    def drop(self, key: bytes, rec: BlockRecord | None) -> None:
        self.tier.delete([key])

    def take_failed(self) -> list[bytes]:
        return self.tier.take_failed()


def daemon_levels(cfg: ServerConfig, tiers: dict[str, Tier | None],
                  make_policy: Callable[[str, int], ResidencyPolicy]
                  ) -> tuple[list[Level], dict[str, int], dict[str, int]]:
    """The configured levels over the open ``tiers`` (``cpu``, ``disk``, ``remote``; None =
    not configured), each with its policy sized by :func:`tier_capacities`; also the
    capacities and bounds."""
    cpu = tiers["cpu"]
    assert isinstance(cpu, CpuTier)
    present = {name: tier for name, tier in tiers.items() if tier is not None}
    capacity, bound = tier_capacities(cpu, present)
    write_through = {"disk": cfg.disk_write_through, "remote": cfg.remote.write_through}
    levels = [Level("cpu", SlotStore(cpu), make_policy("cpu", capacity["cpu"]), "all",
                    code=int(Where.CPU))]
    for name, tier in present.items():
        if name != "cpu":
            levels.append(Level(name, ByteStore(tier), make_policy(name, capacity[name]),
                                write_through=write_through.get(name, False),
                                code=int(Where[name.upper()])))
    return levels, capacity, bound


def tier_capacities(cpu: CpuTier, tiers: dict[str, Tier]) -> tuple[dict[str, int], dict[str, int]]:
    """``(capacity, bound)`` in blocks per tier (``cpu`` and each other tier in ``tiers``).

    ``capacity`` sizes the policies and is what STATS and ``asymcache_tier_capacity_blocks``
    report: the tier's bytes over the entry of the largest block the daemon accepts (one CPU
    slot), so a tier full of such blocks shows 100%. ``bound`` is the most blocks of any size
    the tier can hold (its bytes over the entry of an empty block): only the index is sized by
    it, so it never refuses a block the tiers have room for."""
    largest = BlockHeader(bytes(16), bytes(16), 0, "", cpu.slot_bytes, 0)
    empty = BlockHeader(bytes(16), bytes(16), 0, "", 0, 0)
    capacity, bound = {"cpu": cpu.capacity_blocks}, {"cpu": cpu.capacity_blocks}
    for name, tier in tiers.items():
        if name != "cpu":
            capacity[name] = tier.capacity_bytes // tier.entry_bytes(largest)
            bound[name] = tier.capacity_bytes // tier.entry_bytes(empty)
    return capacity, bound
