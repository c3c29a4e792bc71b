"""Offline oracles: ``asym_oracle`` and ``dead_first`` act on the truth about reuse;
``reuse_fit`` ranks online by statistics fit on the whole trace."""

from __future__ import annotations

import pytest

from asymcache.cacheserver.policy import create_policy
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.sim.belady import NextUseOracle
from asymcache.ops.sim.oracles import FLOOR, AsymOracleConfig, GapTable, ReuseFitConfig
from tests.policy.drive import info, reference

COST = CostModel.preset("h100-llama3-8b")
BLOCK = dict(n_tokens=512, n_bytes=512 * 131072)


def test_asym_oracle_gives_a_block_never_used_again_the_floor_even_with_no_horizon() -> None:
    oracle = NextUseOracle({1: [0.0, 50.0], 2: [0.0]})
    pol = create_policy("asym_oracle", 4, semantics="msa", cost_model=COST, oracle=oracle)
    for key in (1, 2):
        pol.insert(info(key, position=3, **BLOCK), 0.0)
    assert pol.raw_value(2) == pytest.approx(FLOOR * pol.raw_value(1))
    assert pol.evict(1.0) == 2  # the dead block goes first although both were used at 0


def test_asym_oracle_with_a_horizon_counts_only_uses_within_it() -> None:
    oracle = NextUseOracle({1: [0.0, 50.0], 2: [0.0, 500.0]})
    pol = create_policy("asym_oracle", 4, semantics="msa", cost_model=COST, oracle=oracle,
                        config=AsymOracleConfig(horizon_s=120.0))
    for key in (1, 2):
        pol.insert(info(key, position=3, **BLOCK), 0.0)
    assert pol.raw_value(2) == pytest.approx(FLOOR * pol.raw_value(1))


def test_dead_first_evicts_dead_blocks_before_any_live_one_then_lru() -> None:
    uses = {1: [0.0, 9.0], 2: [1.0], 3: [2.0, 9.0], 4: [3.0]}
    pol = create_policy("dead_first", 4, semantics="msa", oracle=NextUseOracle(uses))
    for t, key in enumerate((1, 2, 3, 4)):
        pol.insert(info(key), float(t))
    assert pol.victims(4, 5.0) == [2, 4, 1, 3]


def test_dead_first_does_not_place_a_dead_block_into_a_full_tier() -> None:
    oracle = NextUseOracle({1: [0.0, 9.0], 2: [1.0, 9.0], 3: [2.0]})
    pol = create_policy("dead_first", 2, semantics="prefix", oracle=oracle)
    for t, key in enumerate((1, 2)):
        reference(pol, info(key), float(t))
    assert reference(pol, info(3), 2.0) == (False, [])
    assert 1 in pol and 2 in pol
    with pytest.raises(ValueError, match="future"):
        create_policy("dead_first", 2)


def test_dead_first_reaches_belady_when_every_live_block_fits() -> None:
    refs = [k % 3 if k % 2 else 100 + k for k in range(60)]  # 3 hot keys among one-off keys
    uses: dict[int, list[float]] = {}
    for t, k in enumerate(refs):
        uses.setdefault(k, []).append(float(t))
    hits = {}
    for name in ("dead_first", "belady", "lru"):
        kw = {} if name == "lru" else {"oracle": NextUseOracle(uses)}
        pol = create_policy(name, 3, semantics="msa", **kw)
        hits[name] = sum(reference(pol, info(k), float(t))[0] for t, k in enumerate(refs))
    assert hits["dead_first"] == hits["belady"] > hits["lru"]


def test_gap_table_gives_the_chance_of_reuse_within_the_horizon_given_class_and_age() -> None:
    # first uses (class 0): key 1 comes back after 10 s, key 2 after 100 s, key 3 never
    oracle = NextUseOracle({1: [0.0, 10.0], 2: [0.0, 100.0], 3: [0.0]})
    table = GapTable(oracle, classes=1)
    assert table.uses == [3, 2] and table.gaps == [[10.0, 100.0], []]
    assert table.hit_within(0, 0.0, 20.0) == pytest.approx(1 / 3)
    assert table.hit_within(0, 20.0, 100.0) == pytest.approx(1 / 2)  # key 1's gap is past
    assert table.hit_within(1, 0.0, 1e9) == 0.0  # second uses are never followed


def test_reuse_fit_evicts_the_class_least_likely_to_come_back_not_the_oldest() -> None:
    # first uses (class 0) come back after 1, 18 and 4 s; a second use (class 1) never does
    uses = {10: [0.0, 1.0], 11: [2.0, 20.0], 12: [3.0, 7.0]}
    pol = create_policy("reuse_fit", 3, semantics="msa", oracle=NextUseOracle(uses),
                        config=ReuseFitConfig(horizon_s=5.0, classes=1))
    reference(pol, info(10), 0.0)
    reference(pol, info(10), 1.0)  # key 10: second use, class 1 (p = 0)
    reference(pol, info(11), 2.0)
    reference(pol, info(12), 3.0)
    assert pol.score(11, 4.0)[0] == pytest.approx(1 / 2)  # age 2: gaps 4 and 18 wait, 4 <= 7
    assert pol.victims(1, 4.0) == [10]  # most recent second use, yet least likely
    with pytest.raises(ValueError, match="horizon_s"):
        ReuseFitConfig(horizon_s=0.0)
    with pytest.raises(ValueError, match="oracle"):
        create_policy("reuse_fit", 2)


def test_reuse_fit_with_the_same_seed_picks_the_same_victims() -> None:
    refs = [(k * 7919) % 97 for k in range(400)]
    uses: dict[int, list[float]] = {}
    for t, k in enumerate(refs):
        uses.setdefault(k, []).append(float(t))
    runs = []
    for _ in range(2):
        pol = create_policy("reuse_fit", 16, semantics="msa", oracle=NextUseOracle(uses),
                            config=ReuseFitConfig(sample=4, seed=3))
        runs.append([reference(pol, info(k), float(t)) for t, k in enumerate(refs)])
        assert len(pol) <= 16
    assert runs[0] == runs[1]
