"""``asym``'s hot paths are written out for speed; they must decide exactly as the generic ones.

The reference is ``asym`` whose ``P̂`` comes through the overridable ``reuse_probability`` hook,
computed from the estimator's counters by the textbook formula: that instance takes the generic
``_term(_raw(...))`` path, so any drift of the inlined value, of the kept probability table or
of the inlined lease and signal handling shows up as a different victim or priority.
"""

from __future__ import annotations

import random

import xxhash

from asymcache.cacheserver.policy.asym import AsymConfig, AsymPolicy
from asymcache.cacheserver.policy.base import BlockInfo
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.cacheserver.policy.mini import HASH_SPACE, ModeSelector, key_bytes
from asymcache.cacheserver.policy.reuse import UseRecord
from asymcache.cacheserver.policy.sessions import SessionBook
from asymcache.ops.bench import policy_speed

COST = CostModel.preset("h100-llama3-8b")


class TextbookAsym(AsymPolicy):
    """``asym`` with ``P̂ = min(1, (followed + prior) / (reached + 2·prior))`` recomputed from
    the counters at every use of it, times the block's heat (the generic path)."""

    def reuse_probability(self, info: BlockInfo, rec: UseRecord) -> float:
        r = self.reuse
        p = min(1.0, (r._followed[rec.cls] + r.prior) / (r._reached[rec.cls] + 2 * r.prior))
        return p * rec.heat


def _drive(pol: AsymPolicy, seed: int, steps: int) -> list[object]:
    """A random life of a tier: chains in and out, leased hits, signals, session ends,
    backing changes. Returns every observable outcome in order."""
    rng, book, out = random.Random(seed), SessionBook(), []
    pol.set_sessions(book)
    pol.set_spill_tier("cpu")
    for step in range(steps):
        now = step * 0.37
        chain, session = rng.randrange(40), rng.randrange(12)
        keys = [chain * 100 + i for i in range(rng.randint(1, 8))]
        held = [k for k in keys if k in pol]
        for key in held:
            pol.protect(key)
        for i, key in enumerate(keys):
            block = BlockInfo(key, key - 1 if i else None, i, 128, 1 << 17, session=session,
                              shared=rng.random() < 0.1,
                              retain_until=now + 5.0 if rng.random() < 0.05 else 0.0)
            if key in pol:
                pol.access(key, now)
            elif pol.admit(block, now):
                while len(pol) >= pol.capacity and (v := pol.evict(now)) is not None:
                    out.append(("evict", v))
                if len(pol) < pol.capacity:
                    pol.insert(block, now)
            else:
                out.append(("refused", key))
        for key in held:
            pol.unprotect(key, now)
        for key in keys:
            if key in pol:
                pol.resignal(key, now)
                if rng.random() < 0.2:
                    pol.set_backing(key, rng.choice(("cpu", "disk", None)))
        if rng.random() < 0.05:
            book.end(session)
            pol.session_ended(session, now)
        top = pol.peek_victim(now)
        out.append(("top", top))
    return out


def test_the_written_out_value_decides_exactly_as_the_generic_path() -> None:
    for capacity, semantics in ((96, "msa"), (96, "prefix"), (200, "msa")):
        kwargs = dict(semantics=semantics, cost_model=COST, signals=True, tier="gpu")
        fast = AsymPolicy(capacity, config=AsymConfig(select_min_blocks=32), **kwargs)
        slow = TextbookAsym(capacity, config=AsymConfig(select_min_blocks=32), **kwargs)
        assert _drive(fast, 5, 1500) == _drive(slow, 5, 1500)


def test_ranked_by_value_for_good_the_written_out_value_matches_too() -> None:
    kwargs = dict(semantics="msa", cost_model=COST, signals=True, tier="cpu")
    fast = AsymPolicy(120, config=AsymConfig(select=False), **kwargs)
    slow = TextbookAsym(120, config=AsymConfig(select=False), **kwargs)
    assert _drive(fast, 9, 1500) == _drive(slow, 9, 1500)
    assert fast.selector is None and fast.by_value


def test_remembered_sampling_answers_are_the_hash_s_answers() -> None:
    sel = ModeSelector(10_000, lambda cap, v: AsymPolicy(cap, config=AsymConfig(select=False)),
                       lambda i: 1.0, target_blocks=2048)
    threshold = int(sel.rate * HASH_SPACE)
    for _ in range(2):  # asked twice: the second answers come from the table
        for key in [*range(3000), b"block-key", "text-key"]:
            expected = xxhash.xxh3_64_intdigest(key_bytes(key)) < threshold
            assert sel.sampled(key) == expected


def test_the_policy_benchmark_prices_every_kind_of_call() -> None:
    figures = policy_speed.calls("asym", 64, 200)
    assert set(figures) == {"hit", "resignal", "miss", "remove"}
    assert all(us > 0 for us in figures.values())
