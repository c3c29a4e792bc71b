"""Offline oracles: ``asym_oracle`` and ``dead_first`` act on the truth about reuse."""

from __future__ import annotations

import pytest

from cacheserver.policy import create_policy
from cacheserver.policy.belady import NextUseOracle
from cacheserver.policy.cost import CostModel
from cacheserver.policy.oracle import FLOOR, AsymOracleConfig
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
