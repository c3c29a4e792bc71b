"""Bulk events (``access_many``, ``insert_many``) and the deferred victim order decide exactly as
one call per block does."""

from __future__ import annotations

import random

import pytest

from asymcache.cacheserver.policy import HeapOrder, ResidencyPolicy, create_policy, policy_names
from asymcache.cacheserver.policy.asym import AsymConfig, AsymPolicy
from asymcache.cacheserver.policy.cost import CostModel
from tests.policy.drive import info

ONLINE = policy_names(include_offline=False)
COST = CostModel.preset("h100-llama3-8b")


class _GenericAsym(AsymPolicy):
    """``asym`` through the base class's generic ``insert``/``evict``/``_enqueue``: the
    reference its inlined versions must match."""

    insert = ResidencyPolicy.insert  # type: ignore[assignment]
    evict = ResidencyPolicy.evict  # type: ignore[assignment]
    _enqueue = ResidencyPolicy._enqueue


def _replay(name: str, semantics: str, bulk: bool, seed: int = 3) -> list:
    policy = create_policy(name, 40, semantics=semantics, cost_model=COST, tier="gpu")
    return _drive(policy, bulk, seed)


def _drive(policy: ResidencyPolicy, bulk: bool, seed: int = 3) -> list:
    """A seeded stream of requests (runs of blocks), leases, TTL pins and removals; returns
    every decision (victims, refusals, the next victim) in order."""
    rng = random.Random(seed)
    out: list = []
    now = 0.0
    for _ in range(1500):
        now += rng.expovariate(2.0)
        seq, length = rng.randrange(60), rng.randrange(1, 8)
        keys = [seq * 16 + i for i in range(length)]
        hits, new = [], []
        for i, key in enumerate(keys):
            block = info(key, i, keys[i - 1] if i else None, 512, 1 << 17)
            if key in policy:
                hits.append(key)
            elif policy.admit(block, now):
                while len(policy) + len(new) >= policy.capacity:
                    victim = policy.evict(now)
                    if victim is None:
                        break
                    out.append(("evict", victim))
                if len(policy) + len(new) < policy.capacity:
                    new.append(block)
            else:
                out.append(("refuse", key))
        if bulk:
            policy.access_many(hits, now)
            policy.insert_many(new, now)
        else:
            for key in hits:
                policy.access(key, now)
            for block in new:
                policy.insert(block, now)
        if rng.random() < 0.1 and keys[0] in policy:
            policy.pin(keys[0], now + 3.0)
        if rng.random() < 0.05 and keys[-1] in policy:
            policy.remove(keys[-1], now)
        out.append(("next", policy.peek_victim(now)))
    return out


@pytest.mark.parametrize("semantics", ["msa", "prefix"])
@pytest.mark.parametrize("name", ONLINE)
def test_bulk_events_make_the_same_decisions_as_one_call_per_block(name: str,
                                                                    semantics: str) -> None:
    assert _replay(name, semantics, bulk=True) == _replay(name, semantics, bulk=False)


@pytest.mark.parametrize(("clock", "select"), [("time", True), ("inflation", True),
                                               ("time", False), ("inflation", False)])
@pytest.mark.parametrize("tier", ["gpu", "cpu"])
@pytest.mark.parametrize("semantics", ["msa", "prefix"])
def test_asym_inlined_insert_and_evict_decide_as_the_generic_base_class(
        semantics: str, tier: str, clock: str, select: bool) -> None:
    # select: a selector even in a tier of 40; without: ranked by value from the start
    config = AsymConfig(select_min_blocks=0, clock=clock, select=select)
    fast = AsymPolicy(40, semantics=semantics, cost_model=COST, tier=tier, config=config)
    generic = _GenericAsym(40, semantics=semantics, cost_model=COST, tier=tier, config=config)
    for policy in (fast, generic):
        policy.set_spill_tier("disk" if tier == "cpu" else "cpu")
    assert _drive(fast, bulk=True, seed=11) == _drive(generic, bulk=False, seed=11)
    if select:
        assert fast.selector.flips == generic.selector.flips
    if clock == "inflation":
        assert fast.inflation == generic.inflation


def test_asym_bulk_access_keeps_the_selector_and_the_estimator_in_step() -> None:
    config = AsymConfig(select_min_blocks=0)  # a selector even in a tier of 8 blocks
    one = create_policy("asym", 8, semantics="msa", cost_model=COST, config=config)
    many = create_policy("asym", 8, semantics="msa", cost_model=COST, config=config)
    for policy in (one, many):
        for i in range(8):
            policy.insert(info(i, i, i - 1 if i else None), 0.0)
    for step in range(1, 300):
        keys = [k for k in range(8) if (k * step) % 3]
        for key in keys:
            one.access(key, float(step))
        many.access_many(keys, float(step))
    assert one.reuse.table() == many.reuse.table()
    assert one.selector.saved == many.selector.saved
    assert [one.score(k) for k in range(8)] == [many.score(k) for k in range(8)]


def test_heap_order_pops_by_priority_then_by_push_order_with_deferred_pushes() -> None:
    order = HeapOrder()
    rng = random.Random(5)
    expected: dict[int, tuple[tuple, int]] = {}
    for stamp in range(3000):
        key = rng.randrange(200)
        if rng.random() < 0.1:
            order.discard(key)
            expected.pop(key, None)
            continue
        priority = (rng.randrange(50),)
        order.push(key, priority)
        expected[key] = (priority, stamp)
        if rng.random() < 0.05:  # a read in between moves the pending pushes into the heap
            lowest = min(expected, key=expected.__getitem__)
            assert order.peek() == (lowest, expected[lowest][0])
    assert len(order) == len(expected)
    popped = [order.pop() for _ in range(len(expected))]
    assert popped == [k for k, _ in sorted(expected.items(), key=lambda kv: kv[1])]
    assert order.pop() is None
