"""Shared pricing for cost-aware policies: what losing a block from this tier costs."""

from __future__ import annotations

from asymcache.cacheserver.policy.base import BlockInfo, ResidencyPolicy


class CostedPolicy(ResidencyPolicy):
    """A policy that prices a miss with its ``CostModel``.

    ``miss_cost(info)`` is the cheaper of recomputing the block at its token position
    (``position · n_tokens``) and loading it from the next tier that still holds it
    (``set_backing``) or, with no lower copy, from the tier it would be demoted to
    (``set_spill_tier``), in seconds. Without a cost model every block costs 1.0, so the
    policy degrades to its cost-blind form.
    """

    def miss_cost(self, info: BlockInfo) -> float:
        cost = self.cost_of(info)
        if cost is None:
            return 1.0
        tier = self._backing.get(info.key) or self.spill_tier
        return cost.miss_cost(info.position * info.n_tokens, info.n_tokens, info.n_bytes, tier)

    @staticmethod
    def size_of(info: BlockInfo) -> float:
        """Size used to normalise value per cached unit: bytes, or tokens when bytes are 0."""
        return float(info.n_bytes or info.n_tokens or 1)
