"""Leases are counted in one place, the session table, per engine and tier; a tier's policy only
learns when a block's first lease is taken and its last one dropped."""

from __future__ import annotations

from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.leases import EngineSession, SessionTable
from asymcache.cacheserver.policy import create_policy
from tests.policy.drive import info

LAYOUT = KVLayout(num_layers=1, num_kv_heads=1, head_dim=8, block_size=4, dtype="float32")


def _table(n: int) -> tuple[SessionTable, list[EngineSession]]:
    table = SessionTable(n)
    sessions = [EngineSession(f"e{i}", b"e%d" % i, "m", LAYOUT, 2, create_policy("lru", 2), 0.0)
                for i in range(n)]
    for s in sessions:
        table.add(s)
    return table, sessions


def test_a_shared_tier_block_stays_until_every_engines_last_lease_unit_is_released() -> None:
    table, (a, b) = _table(2)
    cpu = create_policy("lru", 1, tier="cpu")
    cpu.insert(info(1), 0.0)
    policies = {"cpu": cpu}
    table.lease(a, 1, "cpu", cpu)
    table.lease(a, 1, "cpu", cpu)
    table.lease(b, 1, "cpu", cpu)
    assert table.release(a, 1, {**policies, "gpu": a.gpu_policy}, 1.0)
    assert a.lease_count == 1 and cpu.evict(1.0) is None
    assert table.release_all(a, {**policies, "gpu": a.gpu_policy}, 2.0) == 1
    assert not a.leases and cpu.evict(2.0) is None  # b still holds it
    assert not table.release(a, 1, {**policies, "gpu": a.gpu_policy}, 2.5)
    assert table.release(b, 1, {**policies, "gpu": b.gpu_policy}, 3.0)
    assert cpu.evict(3.0) == 1


def test_gpu_leases_are_per_engine_pool() -> None:
    table, (a, b) = _table(2)
    for s in (a, b):
        s.gpu_policy.insert(info(7), 0.0)
        table.lease(s, 7, "gpu", s.gpu_policy)
    table.release_all(a, {"gpu": a.gpu_policy}, 1.0)
    assert a.gpu_policy.evict(1.0) == 7  # b's lease is on b's own copy
    assert b.gpu_policy.evict(1.0) is None
