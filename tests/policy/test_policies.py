"""Every policy: leases and pins are honoured, capacity holds, and each evicts what it should."""

from __future__ import annotations

import random

import pytest

from asymcache.cacheserver.policy import create_policy, policy_names
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.sim.belady import NextUseOracle
from tests.policy.drive import info, reference

ONLINE = policy_names(include_offline=False)
COST = CostModel.preset("h100-llama3-8b")


def make(name: str, capacity: int, semantics: str = "msa", **kw: object):
    return create_policy(name, capacity, semantics=semantics, cost_model=COST, **kw)


def test_registry_lists_every_baseline_and_rejects_unknown_names() -> None:
    assert {"lru", "lru_tail", "lfu", "gdsf", "pensieve", "belady"} <= set(policy_names())
    assert "belady" not in ONLINE
    with pytest.raises(ValueError, match="known"):
        create_policy("mru", 4)
    with pytest.raises(ValueError, match="oracle"):
        create_policy("belady", 4)


@pytest.mark.parametrize("name", ONLINE)
@pytest.mark.parametrize("semantics", ["prefix", "msa"])
def test_leased_and_pinned_blocks_are_never_victims(name: str, semantics: str) -> None:
    rng = random.Random(7)
    pol = make(name, 8, semantics)
    held = {0: "lease", 1: "pin", 2: "ttl"}
    for k in range(8):
        pol.insert(info(k, position=k % 3), now=float(k))
    pol.protect(0)
    pol.pin(1)
    pol.pin(2, until=1000.0)
    for step in range(200):
        now = 10.0 + step
        _, victims = reference(pol, info(100 + rng.randrange(40), position=rng.randrange(8)), now)
        assert not set(victims) & set(held)
        assert len(pol) <= 8
    assert all(k in pol for k in held)


@pytest.mark.parametrize("name", ONLINE)
def test_a_ttl_pin_lapses_by_itself_and_a_full_tier_of_held_blocks_yields_nothing(
    name: str,
) -> None:
    pol = make(name, 2)
    pol.insert(info(1), 0.0)
    pol.insert(info(2), 0.0)
    pol.pin(1, until=5.0)
    pol.protect(2)
    assert pol.evict(4.0) is None
    assert pol.evict(5.0) == 1
    pol.unprotect(2, 6.0)
    assert pol.victims(3, 6.0) == [2]
    assert len(pol) == 0


def test_lru_evicts_in_order_of_last_use() -> None:
    pol = make("lru", 3)
    for k in (1, 2, 3):
        pol.insert(info(k), float(k))
    pol.access(1, 4.0)
    assert pol.victims(3, 5.0) == [2, 3, 1]


def test_lru_tail_breaks_ties_deepest_block_first() -> None:
    pol = make("lru_tail", 4)
    for pos, k in enumerate((10, 11, 12)):
        pol.insert(info(k, position=pos), 1.0)
    pol.insert(info(20, position=5), 2.0)
    assert pol.victims(4, 3.0) == [12, 11, 10, 20]


def test_lfu_evicts_the_least_used_then_the_oldest() -> None:
    pol = make("lfu", 3)
    for k in (1, 2, 3):
        pol.insert(info(k), float(k))
    pol.access(1, 4.0)
    pol.access(2, 5.0)
    assert pol.victims(3, 6.0) == [3, 1, 2]


def test_gdsf_prefers_dear_blocks_and_ages_with_its_clock() -> None:
    pol = make("gdsf", 3)
    deep, shallow = info(1, position=40, n_tokens=512), info(2, position=0, n_tokens=512)
    pol.insert(deep, 0.0)
    pol.insert(shallow, 0.0)
    assert pol.evict(1.0) == 2  # the same frequency: the cheaper, leading block goes
    h_deep = pol.score(1)
    pol.insert(info(3, position=0, n_tokens=512), 2.0)
    # the newcomer starts at L = H(evicted block 2), above where block 2 was
    assert pol.score(3) > COST.recompute_cost(0, 512) / 1600
    assert pol.inflation == pytest.approx(COST.recompute_cost(0, 512) / 1600)
    assert h_deep == pytest.approx(COST.recompute_cost(40 * 512, 512) / 1600)


def test_gdsf_prices_a_block_backed_by_cpu_at_its_load_cost() -> None:
    pol = make("gdsf", 2)
    pol.insert(info(1, position=40, n_tokens=512, n_bytes=512 * 131072), 0.0)
    pol.insert(info(2, position=0, n_tokens=512, n_bytes=512 * 131072), 0.0)
    pol.set_backing(1, "cpu")  # now block 1 is cheap to get back: it becomes the victim
    assert pol.backing(1) == "cpu"
    assert pol.evict(1.0) == 1


def test_pensieve_evicts_the_lowest_cost_per_idle_second() -> None:
    pol = make("pensieve", 3)
    pol.insert(info(1, position=0, n_tokens=512), 0.0)  # cheap, idle for 10 s at t=10
    pol.insert(info(2, position=60, n_tokens=512), 0.0)  # dear, idle as long
    pol.insert(info(3, position=0, n_tokens=512), 9.0)  # cheap but just used
    assert pol.evict(10.0) == 1
    # block 2: 0.0279 s / 10 s idle; block 3: 0.0113 s / 1 s idle
    assert pol.evict(10.0) == 2


def random_refs(seed: int, n: int, universe: int) -> list[int]:
    """A skewed random single-block reference string."""
    rng = random.Random(seed)
    return [min(int(rng.paretovariate(0.8)), universe) for _ in range(n)]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("capacity", [1, 4, 16])
def test_belady_has_at_least_the_hits_of_every_online_policy(seed: int, capacity: int) -> None:
    refs = random_refs(seed, 600, 80)
    uses: dict[int, list[float]] = {}
    for t, k in enumerate(refs):
        uses.setdefault(k, []).append(float(t))
    hits = {}
    for name in [*ONLINE, "belady"]:
        kw = {"oracle": NextUseOracle(uses)} if name == "belady" else {}
        pol = make(name, capacity, **kw)
        hits[name] = sum(reference(pol, info(k, position=k % 5), float(t))[0]
                         for t, k in enumerate(refs))
        assert len(pol) <= capacity
    assert all(hits["belady"] >= h for h in hits.values()), hits
    assert hits["belady"] > hits["lru"]


@pytest.mark.parametrize("name", ONLINE)
def test_the_same_events_give_the_same_victims(name: str) -> None:
    runs = []
    for _ in range(2):
        pol = make(name, 8)
        runs.append([reference(pol, info(k, position=k % 7), float(t))[1]
                     for t, k in enumerate(random_refs(3, 300, 50))])
    assert runs[0] == runs[1]
