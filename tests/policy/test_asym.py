"""``asym``: LRU when values tie, cost- and reuse-aware otherwise, leaves first under prefix."""

from __future__ import annotations

import math
import random

import pytest

from asymcache.cacheserver.policy import create_policy
from asymcache.cacheserver.policy.asym import AsymConfig, AsymPolicy
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.cacheserver.policy.mini import ModeSelector, key_bytes
from asymcache.cacheserver.policy.reuse import ReuseEstimator
from tests.policy.drive import info, reference

COST = CostModel.preset("h100-llama3-8b")
BLOCK = dict(n_tokens=512, n_bytes=512 * 131072)


def asym(capacity: int, semantics: str = "msa", **cfg: object) -> AsymPolicy:
    config = AsymConfig(**{"select": False, **cfg})  # type: ignore[arg-type]
    return AsymPolicy(capacity, semantics=semantics, cost_model=COST, config=config)


def test_with_equal_values_asym_evicts_exactly_like_lru() -> None:
    rng = random.Random(3)
    a = asym(6, use_cost=False, use_reuse=False, admission=False)
    lru = create_policy("lru", 6, semantics="msa")
    for t in range(400):
        block = info(rng.randrange(20), position=rng.randrange(4))
        assert reference(a, block, float(t)) == reference(lru, block, float(t))


def test_under_msa_the_cheap_leading_block_goes_before_the_dear_tail() -> None:
    pol = asym(3, use_reuse=False)  # equal P̂: the position-aware cost decides
    chain = [info(k, position=p, parent=k - 1 if p else None, **BLOCK)
             for k, p in ((10, 0), (11, 1), (12, 40))]
    for block in chain:
        pol.insert(block, 0.0)
    assert pol.evict(1.0) == 10  # position 0 is the cheapest to recompute


def test_under_prefix_a_block_with_a_resident_child_is_never_a_victim() -> None:
    pol = asym(3, semantics="prefix")
    for p in range(3):
        pol.insert(info(p, position=p, parent=p - 1 if p else None, **BLOCK), float(p))
    assert pol.resident_children(0) == 1
    assert pol.victims(3, 5.0) == [2, 1, 0]  # leaf after leaf, although 0 is the cheapest


def test_a_block_that_splits_a_resident_run_is_charged_one_more_segment() -> None:
    pol = asym(4)
    for p in range(3):
        pol.insert(info(p, position=p, parent=p - 1 if p else None, **BLOCK), 0.0)
    middle, end = pol.blocks[1], pol.blocks[2]
    assert pol._cost(middle) == pytest.approx(COST.recompute_cost(512, 512) + COST.segment_s)
    assert pol._cost(end) == pytest.approx(COST.recompute_cost(1024, 512))


def test_reuse_estimates_rise_for_blocks_that_are_used_again() -> None:
    est = ReuseEstimator(history=100)
    for k in range(200):  # blocks used once, and blocks used three times a second apart
        est.observe(None, float(k))
        rec = est.observe(None, float(k))
        rec = est.observe(rec, k + 1.0)
        est.observe(rec, k + 2.0)
    first = est.probability(0)
    second = est.probability(est.repeat_class(2, 1.0))
    assert first == pytest.approx((200 + 1) / (400 + 2))
    assert second > 0.95 > first


def test_a_new_block_inherits_the_lineage_of_its_parent() -> None:
    est = ReuseEstimator(history=10)
    hot = est.observe(est.observe(None, 0.0), 0.5)  # a reused parent
    child = est.observe(None, 1.0, parent=hot)
    grandchild = est.observe(None, 1.0, parent=child)
    assert child.cls == grandchild.cls != 0


def test_the_ghost_history_is_bounded() -> None:
    est = ReuseEstimator(history=3)
    for k in range(10):
        est.remember(k, est.observe(None, 0.0))
    assert [k for k in range(10) if est.peek(k) is not None] == [7, 8, 9]


def test_admission_refuses_a_block_worth_less_than_every_victim() -> None:
    pol = asym(2)
    rng = random.Random(0)
    for t in range(300):  # teach it that repeats are reused and first uses are not
        k = rng.randrange(2)
        reference(pol, info(k, position=40, **BLOCK), float(t))
        reference(pol, info(1000 + t, position=0, **BLOCK), float(t))
    assert not pol.admit(info(5000, position=0, **BLOCK), 301.0)
    assert 0 in pol and 1 in pol
    prefix = asym(2, semantics="prefix")
    prefix.insert(info(1, **BLOCK), 0.0)
    prefix.insert(info(2, **BLOCK), 0.0)
    assert prefix.admit(info(3, **BLOCK), 1.0)  # under prefix reuse nothing is refused


def test_the_selector_starts_with_lru_and_samples_keys_by_a_fixed_hash() -> None:
    pol = AsymPolicy(10_000, semantics="msa", cost_model=COST)
    assert pol.selector is not None and not pol.by_value
    sel = pol.selector
    picks = [k for k in range(2000) if sel.sampled(k)]
    assert picks == [k for k in range(2000) if sel.sampled(k)]
    assert 0.1 < len(picks) / 2000 < 0.3  # rate = 2048 / 10000
    assert key_bytes(b"\x01" * 16) == b"\x01" * 16 and key_bytes(1) == (1).to_bytes(16, "little")
    with pytest.raises(TypeError, match="int, bytes or str"):
        key_bytes(1.5)


def test_the_selector_switches_to_the_ranking_that_saves_more() -> None:
    class Stub:
        capacity = 4

        def __init__(self, by_value: bool) -> None:
            self.by_value = by_value

        def __contains__(self, key: object) -> bool:
            return self.by_value  # the value copy hits everything, the LRU copy nothing

        def access(self, key: object, now: float) -> None:
            pass

        def admit(self, block: object, now: float) -> bool:
            return False

    sel = ModeSelector(4, lambda cap, v: Stub(v), lambda i: 1.0, dwell=10)  # type: ignore
    flips = [sel.use(info(k), float(k)) for k in range(20)]
    assert sel.by_value and flips.index(True) == 9 and sel.flips == 1


def test_a_disk_tier_refuses_blocks_that_recompute_faster_than_they_load() -> None:
    slow = CostModel.preset("a100-llama2-7b")  # disk load of a 256 MiB block: 38 ms
    block = dict(n_tokens=512, n_bytes=512 * slow.kv_bytes_per_token)
    disk = AsymPolicy(100, semantics="msa", cost_model=slow, tier="disk",
                      config=AsymConfig(select=False))
    assert not disk.admit(info(1, position=0, **block), 0.0)  # recompute: 33 ms
    assert disk.admit(info(2, position=8, **block), 0.0)  # recompute at 4096: 41 ms
    gpu = AsymPolicy(100, semantics="msa", cost_model=slow, config=AsymConfig(select=False))
    assert gpu.admit(info(1, position=0, **block), 0.0)


def test_a_new_cost_model_reaches_the_miniature_copies() -> None:
    pol = AsymPolicy(100, semantics="msa", cost_model=None, tier="cpu")
    pol.cost_model = COST
    pol.set_spill_tier("disk")
    assert pol.selector is not None
    assert all(c.cost_model is COST and c.spill_tier == "disk"
               for c in pol.selector.copies.values())


def test_a_tier_below_select_min_blocks_ranks_by_recency_like_lru_tail() -> None:
    rng = random.Random(11)
    small = AsymPolicy(32, semantics="msa", cost_model=COST)  # default select_min_blocks=64
    assert small.selector is None and not small.by_value
    lru_tail = create_policy("lru_tail", 32, semantics="msa")
    for t in range(600):
        block = info(rng.randrange(80), position=rng.randrange(6), **BLOCK)
        assert reference(small, block, float(t // 3)) == reference(lru_tail, block, float(t // 3))
    assert small.reuse.table() == {}  # no statistics kept: they would decide nothing
    assert AsymPolicy(64, semantics="msa", cost_model=COST).selector is not None


def test_select_rate_caps_the_share_of_uses_the_miniature_copies_see() -> None:
    full = AsymPolicy(1000, semantics="msa", cost_model=COST, config=AsymConfig(select_rate=1.0))
    capped = AsymPolicy(1000, semantics="msa", cost_model=COST)  # the default: a quarter
    assert full.selector is not None and full.selector.rate == 1.0
    assert [c.capacity for c in full.selector.copies.values()] == [1000, 1000]
    assert capped.selector is not None and capped.selector.rate == 0.25
    assert [c.capacity for c in capped.selector.copies.values()] == [250, 250]
    large = AsymPolicy(100_000, semantics="msa", cost_model=COST)  # copies of 2,048 blocks
    assert large.selector is not None and large.selector.rate == 2048 / 100_000
    with pytest.raises(ValueError, match="select_rate"):
        AsymConfig(select_rate=0.0)
    with pytest.raises(ValueError, match="select_min_blocks"):
        AsymConfig(select_min_blocks=-1)


def test_a_verdict_flip_during_an_insert_without_admit_ranks_every_block() -> None:
    # the daemon's GPU COMMIT inserts without admit: the new block's first use can flip the
    # selector's verdict while the block is held but has no record yet
    rng = random.Random(1)
    pol = AsymPolicy(200, semantics="msa", cost_model=COST,
                     config=AsymConfig(select_rate=1.0))  # every use reaches the copies
    assert pol.selector is not None
    pol.selector.dwell = 50
    for step in range(1, 3000):
        seq, length = rng.randrange(300), rng.randrange(1, 10)
        keys = [seq * 100 + i for i in range(length)]
        for i, key in enumerate(keys):
            if key in pol:
                pol.access(key, step * 0.01)
                continue
            while len(pol) >= pol.capacity and pol.evict(step * 0.01) is not None:
                pass
            pol.insert(info(key, i, keys[i - 1] if i else None, 16, 1 << 16), step * 0.01)
    assert pol.selector.flips >= 1
    assert len(pol.order) == pol.evictable == len(pol)  # every block ranked once


def test_heat_counts_uses_weighted_by_their_age() -> None:
    est = ReuseEstimator(history=10, heat_scale=2.0)  # θ = 2 × the default 60 s gap
    rec = est.observe(None, 0.0)
    assert rec.heat == 1.0
    rec = est.observe(rec, 10.0)
    assert rec.heat == 1.0 + math.exp(-10.0 / 120.0)
    rec = est.observe(rec, 250.0)
    assert rec.heat == 1.0 + (1.0 + math.exp(-10.0 / 120.0)) * math.exp(-240.0 / 120.0)
    off = ReuseEstimator(history=10)
    assert off.observe(off.observe(None, 0.0), 1.0).heat == 1.0
    with pytest.raises(ValueError, match="heat_scale"):
        ReuseEstimator(history=10, heat_scale=-1.0)


def _used(pol: AsymPolicy, key: int, times: list[float]) -> None:
    reference(pol, info(key, position=3, **BLOCK), times[0])
    for t in times[1:]:
        pol.access(key, t)


@pytest.mark.parametrize("heat", [True, False])
def test_of_two_blocks_in_one_class_the_one_used_more_often_lately_stays(heat: bool) -> None:
    pol = asym(3, heat=heat, admission=False)
    _used(pol, 1, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 13.0])  # popular
    _used(pol, 2, [1.0, 3.0, 7.0, 13.0])  # as recent, same class: 4+ uses, last gap 6 s
    _used(pol, 3, [13.0])
    hot, cold = pol._rec[1], pol._rec[2]
    assert hot.cls == cold.cls and hot.last_s == cold.last_s
    tau = 2.0 * pol.reuse.typical_gap_s()
    if heat:
        assert hot.heat > cold.heat > 1.0
        assert pol.score(1) - pol.score(2) == pytest.approx(tau * math.log(hot.heat / cold.heat))
        assert pol.victims(2, 14.0)[1] == 2  # the rarely used one goes before the popular one
    else:
        assert hot.heat == cold.heat == 1.0
        assert pol.score(1) == pol.score(2)


def test_each_pool_reports_how_it_ranks_for_the_ranking_gauge() -> None:
    from asymcache.cacheserver.handlers_data import rankings

    value = asym(200)  # select=False: by value for good
    selecting = AsymPolicy(200, semantics="msa", cost_model=COST)  # its selector starts on LRU
    small = AsymPolicy(10, semantics="msa", cost_model=COST)  # under select_min_blocks
    lru = create_policy("lru", 200, semantics="msa")
    assert (value.ranking, selecting.ranking, small.ranking, lru.ranking) == \
        ("value", "recency", "recency", None)
    got = rankings({"cpu": selecting, "disk": lru}, [value, small, value])
    assert got == {("gpu", "value"): 2, ("gpu", "recency"): 1,
                   ("cpu", "value"): 0, ("cpu", "recency"): 1}
    assert rankings({"cpu": lru}, []) == {}
