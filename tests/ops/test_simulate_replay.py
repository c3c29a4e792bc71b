"""Replay invariants: capacities hold, runs repeat exactly, Belady bounds hits, pins hold."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from asymcache.cacheserver.policy import policy_names
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.sim.config import RunSpec, TierSpec, parse_size
from asymcache.ops.sim.replay import Replay
from asymcache.ops.sim.trace import Request, Trace, load_trace

COST = CostModel.preset("h100-llama3-8b")
ONLINE = policy_names(include_offline=False)


def random_trace(seed: int, n: int = 120) -> Trace:
    """Requests over a small prefix tree: random depth, random branch per level."""
    rng = random.Random(seed)
    reqs = []
    for i in range(n):
        path, node = [], 0
        for depth in range(rng.randint(1, 8)):
            node = node * 4 + 1 + rng.randrange(3 if depth < 2 else 4)
            path.append(node)
        reqs.append(Request(float(i), tuple(path), len(path) * 16 + rng.randint(1, 15)))
    return Trace("random", 16, reqs)


def tiers(gpu: int, cpu: int = 0, disk: int = 0) -> tuple[TierSpec, ...]:
    out = [TierSpec("gpu", gpu)]
    out += [TierSpec("cpu", cpu)] if cpu else []
    out += [TierSpec("disk", disk)] if disk else []
    return tuple(out)


@pytest.mark.parametrize("policy", [*ONLINE, "belady"])
@pytest.mark.parametrize("semantics", ["prefix", "msa"])
def test_no_tier_ever_holds_more_blocks_than_its_capacity(policy: str, semantics: str) -> None:
    trace = random_trace(1)
    rp = Replay(trace, COST, RunSpec(policy, semantics, tiers(6, 10, 20)))
    for req, now in zip(trace.requests, rp.clock, strict=True):
        rp.serve(req, now)
        assert all(len(p) <= c for p, c in zip(rp.pols, (6, 10, 20), strict=True))


@pytest.mark.parametrize("policy", ["lru_tail", "asym", "pensieve"])
def test_the_same_trace_and_seed_give_the_same_results(policy: str) -> None:
    rows = []
    for _ in range(2):
        trace = load_trace("chat:sessions=40,seed=5")
        stats = Replay(trace, COST, RunSpec(policy, "msa", tiers(60, 200))).run()
        row = stats.row()
        del row["wall_s"], row["refs_per_s"]
        rows.append((row, stats.ttft.tolist()))
    assert rows[0] == rows[1]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("capacity", [3, 8, 20])
def test_belady_has_at_least_the_gpu_hits_of_every_online_policy(seed: int, capacity: int) -> None:
    trace = random_trace(seed)
    hits = {p: Replay(trace, COST, RunSpec(p, "msa", tiers(capacity))).run().hits["gpu"]
            for p in [*ONLINE, "belady"]}
    assert all(hits["belady"] >= h for h in hits.values()), hits


def test_ttl_pins_keep_an_agent_session_resident_until_they_lapse() -> None:
    # request 0 pins its two blocks for 10 s; request 1 (t=1) cannot evict them, request 2
    # (t=20, after the pin lapsed) can
    trace = Trace("pins", 16, [
        Request(0.0, (1, 2), 33, pin_ttl_s=10.0),
        Request(1.0, (5, 6), 33),
        Request(20.0, (8, 9), 33),
    ])
    rp = Replay(trace, COST, RunSpec("lru", "msa", tiers(2), signals=True))
    rp.serve(trace.requests[0], rp.clock[0])
    rp.serve(trace.requests[1], rp.clock[1])
    assert 1 in rp.pols[0] and 2 in rp.pols[0] and 5 not in rp.pols[0]
    rp.serve(trace.requests[2], rp.clock[2])
    assert 8 in rp.pols[0] and 9 in rp.pols[0]


def test_sizes_parse_as_fractions_percentages_blocks_and_bytes() -> None:
    assert parse_size("0.1", 1000, 4096) == 100
    assert parse_size("10%", 1000, 4096) == 100
    assert parse_size("250", 1000, 4096) == 250
    assert parse_size("1MiB", 1000, 4096) == 256
    assert parse_size("0", 1000, 4096) == 0
    with pytest.raises(ValueError, match="12 parsecs"):
        parse_size("12 parsecs", 1000, 4096)
    with pytest.raises(ValueError, match="within"):
        parse_size("150%", 1000, 4096)


def test_run_specs_reject_bad_tier_orders_and_unknown_policies() -> None:
    with pytest.raises(ValueError, match="gpu tier"):
        RunSpec("lru", "msa", (TierSpec("cpu", 1),))
    with pytest.raises(ValueError, match="in order"):
        RunSpec("lru", "msa", (TierSpec("gpu", 1), TierSpec("disk", 1), TierSpec("cpu", 1)))
    with pytest.raises(ValueError, match="unknown"):
        RunSpec("fifo", "msa", (TierSpec("gpu", 1),))


def test_requests_in_flight_hold_their_gpu_blocks_until_their_last_token() -> None:
    # request 0 decodes 100 tokens at 0.1 s each (in flight until about t=10): request 1 (t=1)
    # cannot evict its blocks; request 2 (t=20) finds it finished. One at a time, request 1
    # evicts them.
    trace = Trace("flight", 16, [
        Request(0.0, (1, 2), 33, output_tokens=100),
        Request(1.0, (5, 6), 33, output_tokens=1),
        Request(20.0, (8, 9), 33, output_tokens=1),
    ])
    rp = Replay(trace, COST, RunSpec("lru", "msa", tiers(2, 4), tpot_s=0.1))
    rp.serve(trace.requests[0], rp.clock[0])
    rp.serve(trace.requests[1], rp.clock[1])
    assert {1, 2} <= set(rp.pols[0].blocks) and 5 not in rp.pols[0]
    assert {5, 6} <= set(rp.pols[1].blocks)
    assert rp._held == {1: 1, 2: 1}

    row = Replay(trace, COST, RunSpec("lru", "msa", tiers(2, 4), tpot_s=0.1)).run().row()
    assert row["gpu_held_mean"] == pytest.approx((0 + 1 + 0) / 3)  # shares at each arrival
    assert row["gpu_hit_ratio"] == 0.0

    alone = Replay(trace, COST, RunSpec("lru", "msa", tiers(2, 4)))
    alone.serve(trace.requests[0], alone.clock[0])
    alone.serve(trace.requests[1], alone.clock[1])
    assert set(alone.pols[0].blocks) == {5, 6}
    assert "gpu_held_mean" not in alone.run().row()


@pytest.mark.parametrize("policy", [*ONLINE, "belady"])
def test_requests_in_flight_never_overfill_a_tier_and_let_go_at_the_end(policy: str) -> None:
    base = random_trace(2)
    rng = random.Random(3)
    trace = Trace("flight", 16, [replace(r, arrival_s=r.arrival_s * 0.05,
                                         output_tokens=rng.randint(1, 40))
                                 for r in base.requests])
    rp = Replay(trace, COST, RunSpec(policy, "msa", tiers(8, 10, 20), tpot_s=0.01))
    held = 0
    for req, now in zip(trace.requests, rp.clock, strict=True):
        rp._finish_until(now)
        held = max(held, len(rp._held))
        rp.serve(req, now)
        assert all(len(p) <= c for p, c in zip(rp.pols, (8, 10, 20), strict=True))
        assert set(rp._held) <= set(rp.pols[0].blocks)  # what is held stays resident
    assert held > 2  # requests did overlap
    rp._finish_until(float("inf"))
    assert not rp._held and not rp.pols[0]._leased


def test_tpot_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="tpot_s"):
        RunSpec("lru", "msa", tiers(2), tpot_s=-0.1)
