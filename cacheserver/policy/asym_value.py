"""What ``asym`` holds a block to be worth, and whether a block may enter a tier: the value half
of :class:`~asymcache.cacheserver.policy.asym.AsymPolicy` (``asym.py`` keeps its events, leases,
selector and ranking; its module docstring has the formula).

* ``Cmiss``: what a miss of the block would cost where it would be reloaded from (its backing
  tier, or the tier its victims spill to), priced by its own engine's cost model; under
  ``prefix`` reuse at most its share of recomputing its whole prefix; under ``msa`` one more
  segment when dropping it would split a resident run. The part that depends only on the
  block's shape and the pricing tier is cached (bounded).
* ``V``: ``τ · ln(P̂ · Cmiss / size / v_ref)`` (``value="log"``, the default) or the raw product
  (``"linear"``), computed only while the selector's verdict is to rank by value.
* Admission (``msa`` only): a block that would rank below every evictable block is refused, and
  so is one that loads slower from a lower tier than it recomputes.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from asymcache.cacheserver.policy.base import BlockInfo, Key
from asymcache.cacheserver.policy.reuse import UseRecord
from asymcache.cacheserver.policy.sessions import band

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.cost import CostModel

_PENDING_MAX = 4096  # admitted blocks the caller has not inserted yet (bounded)
_PRICES_MAX = 4096  # cached miss costs per (position, tokens, bytes, tier) (bounded)


class AsymValue:
    """The pricing, value and admission methods of ``AsymPolicy`` (a mixin: they read the
    policy's blocks, use records, backing tiers, cost models and verdict; the price cache
    ``_prices`` is theirs)."""

    _prices: dict[tuple, float]

    # ---- value --------------------------------------------------------------------------
    def raw_value(self, key: Key) -> float:
        """``P̂ · Cmiss / size`` of resident ``key`` (seconds per byte, weighted by reuse)."""
        return self._raw(self.blocks[key], self._rec[key])

    def score(self, key: Key) -> float:
        """``H`` of resident ``key`` (ranked by recency alone, ``V`` is 0 and not computed)."""
        if not self.by_value:
            return self._base[key] + 0.0
        return self._base[key] + self._value(self.blocks[key], self._rec[key])

    def _value(self, info: BlockInfo, rec: UseRecord) -> float:
        """``V`` of ``info`` whose latest use is ``rec``, while ranked by value.

        It runs for every rank (several per use), so for the default configuration
        (``_plain``) the steps of ``_term(_raw(...))`` are written out here: the same
        operations on the same operands in the same order, hence the same floats."""
        if not self._plain:
            return self._term(self._raw(info, rec))
        key = info.key
        tier = self._backing.get(key) or self.spill_tier
        costs = self.namespace_costs
        model = costs.get(getattr(info, "namespace", None)) if costs else None
        if model is None:
            model = self._cost_model
        slot = (info.position, info.n_tokens, info.n_bytes, tier, id(model))
        cost = self._prices.get(slot)
        if cost is None:
            cost = self._price(info, tier, model)
            self._cache_price(slot, cost)
        if self._msa and model is not None and info.parent in self.blocks and self._kids.get(key):
            cost += model.segment_s
        reuse = self.reuse
        raw = reuse.p_by_class[rec[2]] * rec[3] * cost / float(info.n_bytes or info.n_tokens or 1)
        v_ref = self._v_ref
        if v_ref <= 0.0:
            v_ref = self._v_ref = raw
        return self._gap_scale * reuse.typical_s * math.log(max(raw, 1e-300) / v_ref)

    def _raw(self, info: BlockInfo, rec: UseRecord) -> float:
        config = self.config
        cost = self._cost(info) if config.use_cost else 1.0
        p = self.reuse_probability(info, rec) if config.use_reuse else 1.0
        return p * cost / float(info.n_bytes or info.n_tokens or 1)  # size_of, inlined

    def reuse_probability(self, info: BlockInfo, rec: UseRecord) -> float:
        """``P̂ · heat`` of a block whose latest use is ``rec``: its class's chance of another
        use, weighted by its age-weighted use count (1.0 without ``heat``; ``reuse.py``). The
        oracle overrides this."""
        return self.reuse.probability(rec.cls) * rec.heat

    def _term(self, raw: float) -> float:
        if not self.by_value:
            return 0.0
        config = self.config
        if config.value == "linear":
            return raw
        if self._v_ref <= 0.0:
            self._v_ref = raw
        tau = config.gap_scale * self.reuse.typical_gap_s()
        return tau * math.log(max(raw, 1e-300) / self._v_ref)

    def _cost(self, info: BlockInfo) -> float:
        """Cmiss, plus a segment if it splits a run (msa), or per prefix block (prefix).

        The part that depends only on (position, tokens, bytes, pricing tier) is cached until
        the cost model changes (bounded by ``_PRICES_MAX`` entries)."""
        tier = self._backing.get(info.key) or self.spill_tier
        model = self.cost_of(info)
        slot = (info.position, info.n_tokens, info.n_bytes, tier, id(model))
        cost = self._prices.get(slot)
        if cost is None:
            cost = self._price(info, tier, model)
            self._cache_price(slot, cost)
        if model is not None and self._msa and info.parent in self.blocks \
                and self._kids.get(info.key):
            cost += model.segment_s
        return cost

    def _cache_price(self, slot: tuple, value: float) -> None:
        if len(self._prices) >= _PRICES_MAX:
            self._prices.clear()
        self._prices[slot] = value

    def _price(self, info: BlockInfo, tier: str | None, model: CostModel | None) -> float:
        """Cmiss from ``model`` at ``info``'s position with backing ``tier`` (prefix: the
        cheaper of that and the block's share of recomputing its whole prefix)."""
        if model is None:
            return 1.0
        cost = model.miss_cost(info.position * info.n_tokens, info.n_tokens, info.n_bytes, tier)
        if self.semantics == "prefix":
            n = info.position + 1
            return min(cost, model.recompute_cost(0, n * info.n_tokens) / n)
        return cost

    # ---- admission ----------------------------------------------------------------------
    def admit(self, info: BlockInfo, now: float) -> bool:
        """Count this use; under msa, say no if the block would rank below every victim."""
        if info.key in self.blocks:
            return True
        rec = self._pending.pop(info.key, None) or self._observe_new(info, now)
        if self._refuses(info, rec, now):
            self.reuse.remember(info.key, rec)
            return False
        self._pending[info.key] = rec
        if len(self._pending) > _PENDING_MAX:
            self.reuse.remember(*self._pending.popitem(last=False))
        return True

    def _refuses(self, info: BlockInfo, rec: UseRecord, now: float) -> bool:
        if not self.config.admission or self.semantics == "prefix":
            return False
        if self._never_pays(info):
            return True
        if len(self.blocks) < self.capacity:
            return False
        top = self.peek_victim(now)
        if top is None:
            return False
        h = self._clock(now) + (self._value(info, rec) if self.by_value else 0.0)
        if self.signals:
            return (band(info, self.sessions, now), h) < top[1][:2]
        return h < top[1][0]

    def _never_pays(self, info: BlockInfo) -> bool:
        """A lower tier whose load costs more than recomputing the block (cached as prices are)."""
        if self.tier == "gpu":
            return False
        model = self.cost_of(info)
        if model is None:
            return False
        slot = ("never", info.position, info.n_tokens, info.n_bytes, id(model))
        never = self._prices.get(slot)
        if never is None:
            never = model.has_tier(self.tier) and model.load_cost(self.tier, info.n_bytes) \
                >= model.recompute_cost(info.position * info.n_tokens, info.n_tokens)
            self._cache_price(slot, never)
        return bool(never)
