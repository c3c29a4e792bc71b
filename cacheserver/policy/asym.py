"""``asym``: greedy-dual residency by reuse likelihood × position-aware miss cost.

Each resident block ``b`` carries ``H_b = L + P̂_b · Cmiss_b / size_b``; the lowest ``H`` is
evicted and ``L`` rises to it, so blocks that are not used again age out (DESIGN.md section 5).
Ties go to the least recently used block, so with equal values ``asym`` is exactly LRU.

* ``P̂_b`` comes from a ``ReuseEstimator``: the online share of blocks of ``b``'s class (uses so
  far, gap between its last two uses, or for a new block its parent's lineage) that were used
  again. When ``b`` stays idle past the gap within which its class is usually reused, ``P̂_b``
  is revised down to the chance of a late reuse (its ``H`` is recomputed from the same ``L``),
  so dead blocks of finished sessions do not linger however dear they were.
* ``Cmiss_b`` is the cheaper of recomputing ``b`` at its token position and loading it from the
  next tier that holds it (``set_backing``). Under ``msa`` reuse, evicting a block whose parent
  and a child are both resident splits a run: one more MSA segment (``segment_s``) is charged.
* Under ``prefix`` reuse a block with a resident child is never a victim (leaves first), and a
  block whose parent was just refused is refused too: dropping or skipping a block strands
  everything behind it, which is what sinks cost-only eviction.
* ``admit`` refuses a block whose ``H`` would sit below every evictable resident block: caching
  it would only evict something more valuable. In a lower tier this is the decision whether a
  block is worth writing there (e.g. to disk) at all.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from dataclasses import dataclass

from cacheserver.policy.base import BlockInfo, Key, register_policy
from cacheserver.policy.costed import CostedPolicy
from cacheserver.policy.reuse import ReuseEstimator, UseRecord

_PENDING_MAX = 4096  # admitted blocks the caller has not inserted yet, refused keys (bounded)


@dataclass(frozen=True)
class AsymConfig:
    """Tuning of ``asym`` (docs/policy.md says how the defaults were chosen)."""

    quantile: float = 0.9  # a block is stale once idle past this quantile of its class's gaps
    history_factor: int = 8  # ghost history = this × capacity + 1024 keys
    admission: bool = True  # refuse blocks worth less than every victim
    use_cost: bool = True  # False: every miss costs the same (ablation)
    use_reuse: bool = True  # False: P̂ = 1 for every block (ablation)
    use_expiry: bool = True  # False: P̂ is never revised for idleness (ablation)

    def __post_init__(self) -> None:
        if not 0 < self.quantile <= 1:
            raise ValueError("AsymConfig.quantile must be in (0, 1]")
        if self.history_factor < 0:
            raise ValueError("AsymConfig.history_factor must be >= 0")


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
                                    quantile=self.config.quantile)
        self.inflation = 0.0
        self._rec: dict[Key, UseRecord] = {}
        self._base: dict[Key, float] = {}
        self._stale: set[Key] = set()
        self._expiry: list[tuple[float, int, Key, UseRecord]] = []
        self._seq = itertools.count()
        self._pending: OrderedDict[Key, UseRecord] = OrderedDict()
        self._refused: OrderedDict[Key, None] = OrderedDict()

    # ---- value --------------------------------------------------------------------------
    def value(self, key: Key) -> float:
        """``P̂ · Cmiss / size`` of resident ``key`` (seconds per byte, weighted by reuse)."""
        return self._value(self.blocks[key], self._rec[key], key in self._stale)

    def score(self, key: Key) -> float:
        """``H`` of resident ``key``: ``L`` at its last use plus its value."""
        return self._base[key] + self.value(key)

    def _value(self, info: BlockInfo, rec: UseRecord, stale: bool = False) -> float:
        cost = self.miss_cost(info) if self.config.use_cost else 1.0
        if self.config.use_cost and self.semantics == "msa" and self._splits_run(info):
            cost += self.cost_model.segment_s  # type: ignore[union-attr]
        if not self.config.use_reuse:
            return cost / self.size_of(info)
        p = self.reuse.stale_probability(rec.cls) if stale else self.reuse.probability(rec.cls)
        return p * cost / self.size_of(info)

    def _splits_run(self, info: BlockInfo) -> bool:
        return self.cost_model is not None and info.parent in self.blocks \
            and self.resident_children(info.key) > 0

    # ---- admission ----------------------------------------------------------------------
    def admit(self, info: BlockInfo, now: float) -> bool:
        """Count this use; say no if the block would be worth less than every victim."""
        if info.key in self.blocks:
            return True
        rec = self._pending.pop(info.key, None) or self._observe_new(info, now)
        if self._refuses(info, rec, now):
            self.reuse.remember(info.key, rec)
            _bounded_put(self._refused, info.key, None)
            return False
        self._refused.pop(info.key, None)
        evicted = _bounded_put(self._pending, info.key, rec)
        if evicted is not None:
            self.reuse.remember(*evicted)
        return True

    def _refuses(self, info: BlockInfo, rec: UseRecord, now: float) -> bool:
        if not self.config.admission:
            return False
        if self.semantics == "prefix" and info.parent in self._refused:
            return True
        if len(self.blocks) < self.capacity:
            return False
        self._expire(now)
        top = self.order.peek()
        return top is not None and self.inflation + self._value(info, rec) < top[1][0]

    def _observe_new(self, info: BlockInfo, now: float) -> UseRecord:
        """A use of a non-resident block: its ghost record, else its parent's lineage."""
        prev = self.reuse.recall(info.key)
        if prev is not None or info.parent is None:
            return self.reuse.observe(prev, now)
        parent = self._rec.get(info.parent) or self._pending.get(info.parent) \
            or self.reuse.peek(info.parent)
        return self.reuse.observe(None, now, parent)

    # ---- idleness -----------------------------------------------------------------------
    def _arm(self, key: Key, rec: UseRecord) -> None:
        self._stale.discard(key)
        if self.config.use_expiry:
            due = rec.last_s + self.reuse.expiry_s(rec.cls)
            if due != float("inf"):
                heapq.heappush(self._expiry, (due, next(self._seq), key, rec))
        if len(self._expiry) > 4 * len(self.blocks) + 64:
            self._expiry = [e for e in self._expiry if self._rec.get(e[2]) is e[3]]
            heapq.heapify(self._expiry)

    def _expire(self, now: float) -> None:
        """Mark blocks idle past their class's reuse gaps stale and re-rank them."""
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, _, key, rec = heapq.heappop(heap)
            if self._rec.get(key) is rec and key not in self._stale:
                self._stale.add(key)
                if key not in self._parked:
                    self._enqueue(key, now)

    def _pop(self, now: float) -> Key | None:
        self._expire(now)
        return self.order.pop()

    # ---- hooks --------------------------------------------------------------------------
    def _on_insert(self, info: BlockInfo, now: float) -> None:
        rec = self._pending.pop(info.key, None) or self._observe_new(info, now)
        self._refused.pop(info.key, None)
        self._rec[info.key] = rec
        self._base[info.key] = self.inflation
        self._arm(info.key, rec)

    def _on_access(self, key: Key, now: float) -> None:
        rec = self.reuse.observe(self._rec[key], now)
        self._rec[key] = rec
        self._base[key] = self.inflation
        self._arm(key, rec)

    def _on_remove(self, key: Key) -> None:
        self._base.pop(key, None)
        self._stale.discard(key)
        rec = self._rec.pop(key, None)
        if rec is not None:
            self.reuse.remember(key, rec)

    def _on_evict(self, key: Key, now: float) -> None:
        self.inflation = max(self.inflation, self.score(key))

    def _priority(self, key: Key, now: float) -> tuple:
        return (self.score(key), self._rec[key].last_s, -self.blocks[key].position)


def _bounded_put(table: OrderedDict, key: Key, value: object) -> tuple | None:
    """Insert into a bounded FIFO table; returns the ``(key, value)`` pushed out, if any."""
    table[key] = value
    table.move_to_end(key)
    if len(table) > _PENDING_MAX:
        return table.popitem(last=False)
    return None
