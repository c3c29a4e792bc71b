"""``asym``: greedy-dual residency by reuse likelihood × position-aware miss cost.

Each resident block ``b`` carries ``H_b = L + P̂_b · Cmiss_b / size_b``; the lowest ``H`` is
evicted and ``L`` rises to it, so blocks that are not used again age out (DESIGN.md section 5).

* ``P̂_b`` comes from a ``ReuseEstimator``: the online share of blocks of ``b``'s class (uses
  so far, gap between its last two uses) that were used again within the tier's horizon, the
  time blocks stay resident here (``horizon_factor`` × the mean idle time of victims).
* ``Cmiss_b`` is the cheaper of recomputing ``b`` at its token position and loading it from the
  next tier that holds it (``set_backing``). Under ``msa`` reuse, evicting a block whose parent
  and a child are both resident splits a run: one more MSA segment (``segment_s``) is charged.
* Under ``prefix`` reuse a block with a resident child is never a victim (leaves first):
  dropping it would strand everything behind it, which is what sinks cost-only eviction.
* ``admit`` refuses a block whose ``H`` would sit below every evictable resident block: caching
  it would only evict something more valuable. In a lower tier this is the decision whether a
  block is worth writing there (e.g. to disk) at all.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from cacheserver.policy.base import BlockInfo, Key, register_policy
from cacheserver.policy.costed import CostedPolicy
from cacheserver.policy.reuse import ReuseEstimator, UseRecord

_PENDING_MAX = 4096  # admitted blocks the caller has not inserted yet (bounded)


@dataclass(frozen=True)
class AsymConfig:
    """Tuning of ``asym`` (defaults: see docs/policy.md for how they were chosen)."""

    horizon_factor: float = 2.0  # P̂ horizon = this × mean idle time of victims
    initial_horizon_s: float = 60.0  # horizon before the first eviction
    history_factor: int = 8  # ghost history = this × capacity + 1024 keys
    victim_age_weight: float = 0.01  # EWMA weight of one victim's idle time
    admission: bool = True  # refuse blocks worth less than every victim
    sharpness: float = 1.0  # value uses P̂ ** sharpness
    use_cost: bool = True
    use_reuse: bool = True

    def __post_init__(self) -> None:
        if self.horizon_factor <= 0 or self.initial_horizon_s <= 0:
            raise ValueError("AsymConfig.horizon_factor and initial_horizon_s must be > 0")
        if self.history_factor < 0:
            raise ValueError("AsymConfig.history_factor must be >= 0")
        if not 0 < self.victim_age_weight <= 1:
            raise ValueError("AsymConfig.victim_age_weight must be in (0, 1]")


@register_policy("asym")
class AsymPolicy(CostedPolicy):
    """Greedy-dual on ``P̂ · Cmiss / size`` with admission, leaf-first under prefix reuse."""

    tracks_structure = True
    prices_backing = True

    def __init__(self, capacity: int, *, config: AsymConfig | None = None,
                 **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self.config = config or AsymConfig()
        self.reuse = ReuseEstimator(history=self.config.history_factor * capacity + 1024,
                                    horizon_s=self.config.initial_horizon_s)
        self.inflation = 0.0
        self.victim_idle_s = self.config.initial_horizon_s / self.config.horizon_factor
        self._rec: dict[Key, UseRecord] = {}
        self._base: dict[Key, float] = {}
        self._pending: OrderedDict[Key, UseRecord] = OrderedDict()

    # ---- value --------------------------------------------------------------------------
    def value(self, key: Key) -> float:
        """``P̂ · Cmiss / size`` of resident ``key`` (seconds per byte, weighted by reuse)."""
        return self._value(self.blocks[key], self._rec[key])

    def score(self, key: Key) -> float:
        """``H`` of resident ``key``: ``L`` at its last use plus its value."""
        return self._base[key] + self.value(key)

    def _value(self, info: BlockInfo, rec: UseRecord) -> float:
        cost = self.miss_cost(info) if self.config.use_cost else 0.01
        if not self.config.use_reuse:
            return cost / self.size_of(info)
        if self.semantics == "msa" and self.cost_model is not None and self._splits_run(info):
            cost += self.cost_model.segment_s
        return self.reuse.probability(rec) ** self.config.sharpness * cost / self.size_of(info)

    def _splits_run(self, info: BlockInfo) -> bool:
        return info.parent in self.blocks and self.resident_children(info.key) > 0

    # ---- admission ----------------------------------------------------------------------
    def admit(self, info: BlockInfo, now: float) -> bool:
        """Count this use; say no if the block would be worth less than every victim."""
        if info.key in self.blocks:
            return True
        rec = self._pending.pop(info.key, None)
        if rec is None:
            rec = self._observe_new(info, now)
        top = self.order.peek() if len(self.blocks) >= self.capacity else None
        if self.config.admission and top is not None \
                and self.inflation + self._value(info, rec) < top[1][0]:
            self.reuse.remember(info.key, rec)
            return False
        self._pending[info.key] = rec
        if len(self._pending) > _PENDING_MAX:
            key, stale = self._pending.popitem(last=False)
            self.reuse.remember(key, stale)
        return True

    # ---- hooks --------------------------------------------------------------------------
    def _on_insert(self, info: BlockInfo, now: float) -> None:
        rec = self._pending.pop(info.key, None)
        if rec is None:
            rec = self._observe_new(info, now)
        self._rec[info.key] = rec
        self._base[info.key] = self.inflation

    def _observe_new(self, info: BlockInfo, now: float) -> UseRecord:
        """A use of a non-resident block: its ghost record, else its parent's lineage."""
        prev = self.reuse.recall(info.key)
        if prev is not None or info.parent is None:
            return self.reuse.observe(prev, now)
        parent = self._rec.get(info.parent) or self._pending.get(info.parent) \
            or self.reuse.peek(info.parent)
        return self.reuse.observe(None, now, parent)

    def _on_access(self, key: Key, now: float) -> None:
        self._rec[key] = self.reuse.observe(self._rec[key], now)
        self._base[key] = self.inflation

    def _on_remove(self, key: Key) -> None:
        self._base.pop(key, None)
        rec = self._rec.pop(key, None)
        if rec is not None:
            self.reuse.remember(key, rec)

    def _on_evict(self, key: Key, now: float) -> None:
        self.inflation = max(self.inflation, self.score(key))
        w = self.config.victim_age_weight
        idle = max(0.0, now - self._rec[key].last_s)
        self.victim_idle_s += w * (idle - self.victim_idle_s)
        self.reuse.horizon_s = max(1e-3, self.config.horizon_factor * self.victim_idle_s)

    def _priority(self, key: Key, now: float) -> tuple:
        return (self.score(key), -self.blocks[key].position)
