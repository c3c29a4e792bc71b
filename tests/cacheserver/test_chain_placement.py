"""The daemon's residency manager and the simulator's replay share one tier chain: replaying a
trace through both (the daemon in-process, on a real CPU tier and LMDB disk tier) leaves every
block in the same levels after every request."""

from __future__ import annotations

from pathlib import Path

import pytest

from asymcache.cacheserver.blocks import ROOT_PARENT
from asymcache.cacheserver.chain import Level
from asymcache.cacheserver.index import BlockIndex, BlockRecord
from asymcache.cacheserver.leases import EngineSession, SessionTable
from asymcache.cacheserver.levels import ByteStore, SlotStore, header_of, tier_capacities
from asymcache.cacheserver.metrics import DaemonMetrics
from asymcache.cacheserver.movers import Residency
from asymcache.cacheserver.policy import create_policy
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.cacheserver.protocol import BlockRef, Where, request_ops
from asymcache.ops.sim.config import RunSpec, TierSpec
from asymcache.ops.sim.replay import Replay
from asymcache.ops.sim.trace import load_trace
from asymcache.tiers.base import create_tier
from tests.cacheserver.daemon_fixtures import LAYOUT

COST = CostModel.preset("h100-llama3-8b")
SLOT = 8 << 10
GPU, CPU = 24, 40


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def _key(k: int) -> bytes:
    return k.to_bytes(16, "big")


class Daemon:
    """A residency manager as the daemon builds it, and one engine driven the way the
    simulator models an engine (lookup, promote, allocate with demotion, commit, pin)."""

    def __init__(self, tmp: Path, policy: str, semantics: str, disk_blocks: int) -> None:
        from prometheus_client import CollectorRegistry

        cpu = create_tier("cpu", capacity_bytes=CPU * SLOT, slot_bytes=SLOT, populate=False)
        probe = create_tier("disk", path=str(tmp / "probe"), capacity_bytes=1 << 20,
                            block_bytes=SLOT, map_bytes=8 << 20)
        ref = BlockRecord(_key(1), bytes(16), None, 0, 16, 4096, "layout")
        entry = probe.entry_bytes(header_of(ref))
        probe.close()
        disk = create_tier("disk", path=str(tmp / "disk"), capacity_bytes=disk_blocks * entry,
                           block_bytes=SLOT, map_bytes=16 << 20)
        self.tiers = [cpu, disk]
        capacity, bound = tier_capacities(cpu, {"disk": disk})  # type: ignore[arg-type]
        make = lambda tier, n: create_policy(policy, n, semantics=semantics,
                                             cost_model=COST, tier=tier)
        levels = [Level("cpu", SlotStore(cpu), make("cpu", CPU), "all",  # type: ignore[arg-type]
                        code=int(Where.CPU)),
                  Level("disk", ByteStore(disk), make("disk", disk_blocks), code=int(Where.DISK))]
        self.clock = Clock()
        self.index = BlockIndex(sum(bound.values()) + GPU)
        self.sessions = sessions = SessionTable(1)
        self.res = Residency(self.index, sessions, levels, DaemonMetrics(CollectorRegistry(),
                             request_ops()), self.clock, capacity, bound)
        self.engine = EngineSession("e", b"e", "m", LAYOUT, GPU, make("gpu", GPU), 0.0)
        sessions.add(self.engine)
        self.engine.gpu_policy.set_spill_tier("cpu")  # as the simulator's GPU level

    def close(self) -> None:
        for tier in self.tiers:
            tier.close()

    def serve(self, blocks: tuple[int, ...], found: list[int], plan: list[int], now: float,
              pin_ttl_s: float) -> None:
        res, eng, self.clock.now = self.res, self.engine, now
        policies = eng.policies(res.policies)
        for k, j in zip(blocks, found, strict=True):
            if j == 0:
                self.sessions.lease(eng, _key(k), "gpu", eng.gpu_policy)
        parent = ROOT_PARENT
        for i, k in enumerate(blocks):
            key = _key(k)
            if found[i] == 0:
                eng.gpu_policy.access(key, now)
            else:
                rec = self.index.ensure(BlockRef(key, bytes(16), parent, i), 16, 4096, "layout")
                if found[i] > 0:
                    res.policies[("", "cpu", "disk")[found[i]]].access(key, now)
                    if plan[i] == 2:
                        res.promote(rec)
                self._to_gpu(rec, now)
                self.index.discard_if_unheld(rec)
            parent = key
        self.sessions.release_all(eng, policies, now)
        for k in blocks if pin_ttl_s > 0 else ():
            rec = self.index.get(_key(k))
            if rec is not None:
                res.chain.pin(rec, now + pin_ttl_s, now)

    def _to_gpu(self, rec: BlockRecord, now: float) -> None:
        eng, res = self.engine, self.res
        if rec.key in eng.key_slots:
            eng.gpu_policy.access(rec.key, now)
        if len(eng.key_slots) < GPU:
            slot = min(set(range(GPU)) - set(eng.slot_keys))
        else:
            victims = res.gpu_victims(eng, 1)
            if not victims:  # the GPU keeps no copy: its computed bytes are demoted
                if rec.cpu < 0 and res.top.policy.admit(rec.info(), now):
                    self._fill(rec, res.cpu_reserve(rec, eng))
                return
            slot, vkey, cpu_slot = victims[0]
            vrec = self.index.get(vkey)
            if vrec is not None:
                self._fill(vrec, cpu_slot)
        res.gpu_commit(eng, rec, slot)
        self.sessions.lease(eng, rec.key, "gpu", eng.gpu_policy)

    def _fill(self, rec: BlockRecord, cpu_slot: int) -> None:
        if cpu_slot >= 0:  # the engine copies its bytes, then COMMITs the slot
            assert self.res.cpu_confirm(rec, self.engine, cpu_slot)

    def placement(self, k: int) -> tuple[str, ...]:
        rec = self.index.get(_key(k))
        if rec is None:
            return ()
        return (("gpu",) if rec.key in self.engine.key_slots else ()) + tuple(
            name for name in ("cpu", "disk") if self.res.holds(rec, name))


@pytest.mark.parametrize("source,policy,semantics", [
    ("chat:sessions=12,seed=3", "lru", "prefix"),
    ("chat:sessions=12,seed=4", "lru_tail", "msa"),
    ("agent:sessions=6,seed=2", "lru", "msa"),
])
def test_daemon_and_simulator_place_every_block_alike_after_every_request(
        tmp_path: Path, source: str, policy: str, semantics: str) -> None:
    trace = load_trace(source)
    disk_blocks = 120
    spec = RunSpec(policy, semantics, (TierSpec("gpu", GPU), TierSpec("cpu", CPU),
                                       TierSpec("disk", disk_blocks)), signals=True)
    sim = Replay(trace, COST, spec)
    daemon = Daemon(tmp_path, policy, semantics, disk_blocks)
    seen: set[int] = set()
    try:
        for n, (req, now) in enumerate(zip(trace.requests, sim.clock, strict=True)):
            found = [sim._locate(k) for k in req.blocks]
            plan = sim._plan(found)
            daemon.serve(req.blocks, found, plan, now, req.pin_ttl_s)
            sim.serve(req, now)
            seen.update(req.blocks)
            for k in seen:
                assert daemon.placement(k) == sim.placement(k), (n, k)
    finally:
        daemon.close()
    assert sum(sim.stats.evictions.values()) > 0 and sim.stats.evictions["cpu"] > 0


def test_the_index_is_bounded_by_the_configured_levels_not_by_traffic(tmp_path: Path) -> None:
    from asymcache.cacheserver.config import ServerConfig
    from asymcache.cacheserver.index import IndexFull
    from asymcache.cacheserver.levels import daemon_levels

    cfg = ServerConfig(data_dir=str(tmp_path), cpu_bytes=4 * SLOT, cpu_slot_bytes=SLOT)
    cpu = create_tier("cpu", capacity_bytes=4 * SLOT, slot_bytes=SLOT, populate=False)
    disk = create_tier("disk", path=str(tmp_path / "d"), capacity_bytes=64 * SLOT,
                       block_bytes=SLOT, map_bytes=16 << 20)
    try:
        levels, capacity, bound = daemon_levels(
            cfg, {"cpu": cpu, "disk": disk, "remote": None},
            lambda tier, n: create_policy("lru", n, tier=tier))
        assert [lv.name for lv in levels] == ["cpu", "disk"] and capacity["cpu"] == 4
        assert bound["disk"] >= capacity["disk"] > 0
        index = BlockIndex(sum(bound.values()))
        for i in range(index.max_blocks):
            index.ensure(BlockRef(_key(i), bytes(16), None, 0), 16, 64, "layout")
        with pytest.raises(IndexFull):
            index.ensure(BlockRef(_key(10**6), bytes(16), None, 0), 16, 64, "layout")
    finally:
        cpu.close()
        disk.close()
