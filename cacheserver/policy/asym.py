"""``asym``: residency by reuse likelihood × position-aware miss cost, greedy-dual style.

Each resident block ``b`` carries a priority ``H_b = L_b + V_b`` and the lowest is evicted:

* ``V_b = τ · ln(P̂_b · Cmiss_b / size_b / v_ref)`` (``value="log"``, default): ``e`` times
  the value buys ``τ`` more seconds of residency, where ``τ = gap_scale ×`` the median gap
  between uses of a block. ``L_b`` is the time of ``b``'s last use (``clock="time"``).
  With equal values this is exactly LRU; a dearer or likelier block outlives a cheaper one
  by ``τ · ln(ratio)``. (For reuse gaps with mean ``τ`` and a constant hazard this is the
  residency that maximises saved cost per block-second; docs/policy.md shows the measured
  comparison with the textbook form below.)
* The textbook greedy-dual form (DESIGN.md section 5) is ``clock="inflation"``,
  ``value="linear"``: ``H = L + P̂ · Cmiss / size`` with ``L ← H`` of each victim.

``P̂_b`` comes from a ``ReuseEstimator``: the online share of blocks of ``b``'s class (its uses
and their spacing, or for a new block its parent's lineage) that were used again, weighted by
``b``'s heat (``heat``, default on): its uses counted with weight ``exp(-age / τ)``, so that of
two blocks in the same class the one used more often lately is worth more (on long shared
contexts of uneven popularity it is the popular ones that come back soonest; docs/policy.md,
"Heat"). ``Cmiss_b``
is the cheaper of recomputing ``b`` at its token position and loading it from the lower tier
that holds it or will once ``b`` is demoted (``set_backing``, ``set_spill_tier``). Under
``msa`` reuse, evicting a block whose parent and a child are both resident splits a run: one
more MSA segment (``segment_s``) is charged. (Pricing, ``V`` and admission are written in
``asym_value.py``; this module keeps the policy's events, leases, selector and ranking.)

Under ``prefix`` reuse a block with a resident child is never a victim (leaves first) — cost
alone would drop cheap leading blocks and strand everything behind them — and a leaf is
valued per block of the prefix it completes. ``admit`` (``msa`` only: under prefix a refused
block would strand its suffix) refuses a block that would rank below every evictable block,
and, in a lower tier, a block that loads slower from there than it recomputes (a leading
block on disk with a slow drive): whether a block is worth writing to disk at all.

Ranking by value is used only while it beats recency here: a miniature-simulation selector
(``mini.py``) replays a sample of the uses in two small copies and switches between the two.
Its cost is a choice (``AsymConfig``): ``select_rate`` caps the share of keys it samples
(default 0.25: in tiers up to 8,192 blocks a quarter of the keys, in copies a quarter of the
size; 1.0 made small tiers run two full-size copies, three times the work, for under 0.4% of
simulated TTFT: docs/policy.md, "The selector's sample"), and a tier below
``select_min_blocks`` (default 64: no tier of the simulator's tables) runs no selector at all:
it ranks by recency for good and keeps no reuse statistics.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from asymcache.cacheserver.policy.asym_value import AsymValue
from asymcache.cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.cacheserver.policy.costed import CostedPolicy
from asymcache.cacheserver.policy.mini import ModeSelector
from asymcache.cacheserver.policy.reuse import (
    KIND_PRIVATE,
    KIND_SHARED,
    KIND_UNKNOWN,
    ReuseEstimator,
    UseRecord,
)
from asymcache.cacheserver.policy.sessions import DEAD, NORMAL, RETAINED, SessionBook

_new_record = tuple.__new__  # a UseRecord without its generated __new__ (hot path)



@dataclass(frozen=True)
class AsymConfig:
    """Tuning of ``asym``; docs/policy.md says how the defaults were chosen."""

    gap_scale: float = 2.0  # τ = gap_scale × median reuse gap (log value only)
    history_factor: int = 8  # ghost history = this × capacity + 1024 keys
    admission: bool = True  # msa: refuse blocks that would rank below every victim
    clock: str = "time"  # "time": L = last use; "inflation": L ← H of each victim
    value: str = "log"  # "log": τ·ln(v / v_ref); "linear": v (greedy-dual textbook form)
    use_cost: bool = True  # False: every miss costs the same (ablation)
    use_reuse: bool = True  # False: P̂ = 1 for every block (ablation)
    select: bool = True  # rank by value only while a miniature copy shows it beats LRU
    select_rate: float = 0.25  # largest share of keys the miniature copies sample (speed)
    select_min_blocks: int = 64  # smaller tiers rank by recency, no copies (speed; see below)
    heat: bool = True  # P̂ weighted by the block's age-weighted use count (reuse.py)
    session_kinds: bool = False  # with signals: reuse classes split by session kind
    # (reuse.py); off by default: it cost 2% on the Mooncake conversation trace (policy.md)

    def __post_init__(self) -> None:
        if self.gap_scale < 0:
            raise ValueError("AsymConfig.gap_scale must be >= 0")
        if self.select_min_blocks < 0:
            raise ValueError("AsymConfig.select_min_blocks must be >= 0")
        if not 0.0 < self.select_rate <= 1.0:
            raise ValueError(f"AsymConfig.select_rate must be in (0, 1], got {self.select_rate}")
        if self.history_factor < 0:
            raise ValueError("AsymConfig.history_factor must be >= 0")
        if self.clock not in ("time", "inflation"):
            raise ValueError(f"AsymConfig.clock must be 'time' or 'inflation', not {self.clock!r}")
        if self.value not in ("log", "linear"):
            raise ValueError(f"AsymConfig.value must be 'log' or 'linear', not {self.value!r}")


@register_policy("asym")
class AsymPolicy(AsymValue, CostedPolicy):
    """Evict the lowest ``H = L + V(P̂ · Cmiss / size)``; leaves first under prefix reuse."""

    tracks_structure = True
    prices_backing = True
    signal_aware = True
    config_class = AsymConfig

    def __init__(self, capacity: int, *, config: AsymConfig | None = None,
                 **kwargs: object) -> None:
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self.config = config or AsymConfig()
        self._kinds = self.signals and self.config.session_kinds  # reuse classes by kind
        self.reuse = ReuseEstimator(history=self.config.history_factor * capacity + 1024,
                                    heat_scale=self.config.gap_scale if self.config.heat else 0.0)
        self.inflation = 0.0
        self._rec: dict[Key, UseRecord] = {}
        self._base: dict[Key, float] = {}
        self._pending: OrderedDict[Key, UseRecord] = OrderedDict()
        self._v_ref = 0.0
        self._time_clock = self.config.clock == "time"
        self._msa = self.semantics == "msa"
        self._gap_scale = self.config.gap_scale
        # the default configuration, whose value _value computes inline (not the ablations,
        # nor a subclass with its own P̂ such as the oracle)
        self._plain = (self.config.use_cost and self.config.use_reuse
                       and self.config.value == "log"
                       and type(self).reuse_probability is AsymPolicy.reuse_probability)
        self._learns = True  # keep reuse statistics (False while ranked by recency for good)
        self.by_value = not self.config.select
        self.selector: ModeSelector | None = None
        if self.config.select and capacity >= max(1, self.config.select_min_blocks):
            self.selector = ModeSelector(capacity, self._miniature, self._cost,
                                         max_rate=self.config.select_rate)
            self._copies = tuple(self.selector.copies.values())
        elif self.config.select:
            self._rank_by_recency_for_good()

    def _rank_by_recency_for_good(self) -> None:
        """No value ranking ever (a recency copy, or a tier below ``select_min_blocks``): with
        ``V`` fixed at 0 the reuse statistics decide nothing, so none are kept."""
        self.by_value = False
        self._learns = False
        self.reuse = ReuseEstimator(history=0)  # no ghost records either

    @property
    def cost_model(self) -> CostModel | None:  # type: ignore[override]
        return self._cost_model

    @cost_model.setter
    def cost_model(self, model: CostModel | None) -> None:
        """Replace the cost model here and in the miniature copies (the daemon does this when
        it learns new remote-tier figures)."""
        self._cost_model = model
        self._prices: dict[tuple, float] = {}
        selector = getattr(self, "selector", None)
        if selector is not None:
            for copy in selector.copies.values():
                copy.cost_model = model

    def set_namespace_costs(self, costs: Mapping[Key, CostModel] | None) -> None:
        super().set_namespace_costs(costs)
        self._prices = {}
        selector = getattr(self, "selector", None)
        if selector is not None:
            for copy in selector.copies.values():
                copy.set_namespace_costs(costs)

    # ---- leases and pins reach the miniature copies too ---------------------------------
    def protect(self, key: Key) -> None:
        """The base's ``protect`` inlined (every leased block of every request comes here,
        and to each copy)."""
        self._leased.add(key)
        if key in self.blocks and key not in self._parked:
            self.order.discard(key)
            self._parked.add(key)
        for copy in self._copies_for(key):
            copy.protect(key)

    def unprotect(self, key: Key, now: float = 0.0) -> None:
        """The base's ``unprotect`` inlined (as ``protect``)."""
        self._leased.discard(key)
        if key in self._parked and not self._held(key, now):
            self._parked.discard(key)
            self.order.push(key, self._rank(self.blocks[key], self._rec[key], self._base[key]))
        for copy in self._copies_for(key):
            copy.unprotect(key, now)

    def pin(self, key: Key, until: float | None = None) -> None:
        super().pin(key, until)
        for copy in self._copies_for(key):
            copy.pin(key, until)

    def unpin(self, key: Key, now: float = 0.0) -> None:
        super().unpin(key, now)
        for copy in self._copies_for(key):
            copy.unpin(key, now)

    def set_sessions(self, book: SessionBook | None) -> None:
        super().set_sessions(book)
        if self.selector is not None:
            for copy in self.selector.copies.values():
                copy.set_sessions(book)

    def resignal(self, key: Key, now: float) -> None:
        """The base's ``resignal`` with ``_enqueue`` inlined, after the reuse class moves to
        the block's new kind (``session_kinds``); then each copy's."""
        info = self.blocks.get(key)
        if info is not None and self.signals:
            if self._kinds and self._learns:
                self._rec[key] = self.reuse.reclass(self._rec[key], self._kind(info))
            if now > self._now:
                self._now = now
            self._index_signals(info)
            if key not in self._parked:
                self.order.push(key, self._rank(info, self._rec[key], self._base[key]))
        for copy in self._copies_for(key):
            copy.resignal(key, now)

    def session_ended(self, session: Key, now: float) -> None:
        super().session_ended(session, now)
        if self.selector is not None:
            for copy in self.selector.copies.values():
                copy.session_ended(session, now)

    def _copies_for(self, key: Key) -> tuple[ResidencyPolicy, ...]:
        selector = self.selector
        if selector is None or not selector.sampled(key):
            return ()
        return self._copies

    def set_spill_tier(self, tier: str | None) -> None:
        super().set_spill_tier(tier)
        if self.selector is not None:
            for copy in self.selector.copies.values():
                copy.set_spill_tier(tier)

    def _miniature(self, capacity: int, by_value: bool) -> AsymPolicy:
        """A copy for the selector, ranking by value or by recency for good. The recency copy
        keeps no reuse statistics: with ``V`` fixed at 0 they decide nothing there."""
        copy = AsymPolicy(capacity, config=replace(self.config, select=False),
                          semantics=self.semantics, cost_model=self.cost_model, tier=self.tier,
                          signals=self.signals)
        copy.namespace_costs = self.namespace_costs
        copy.sessions = self.sessions
        copy.by_value = by_value
        if not by_value:
            copy._rank_by_recency_for_good()
        return copy

    @property
    def ranking(self) -> str:
        """``"value"`` while the selector's verdict (or ``select=False``) ranks by ``H``,
        ``"recency"`` while it ranks by last use alone."""
        return "value" if self.by_value else "recency"

    def _clock(self, now: float) -> float:
        return now if self.config.clock == "time" else self.inflation

    def _observe_new(self, info: BlockInfo, now: float) -> UseRecord:
        """A use of a non-resident block: its ghost record, else its parent's lineage."""
        self._select(info, now)
        if not self._learns:
            return _new_record(UseRecord, (1, now, 0, 1.0))
        kind = self._kind(info)
        prev = self.reuse.recall(info.key)
        if prev is not None or info.parent is None:
            return self.reuse.observe(prev, now, None, kind)
        parent = self._rec.get(info.parent) or self._pending.get(info.parent) \
            or self.reuse.peek(info.parent)
        return self.reuse.observe(None, now, parent, kind)

    def _kind(self, info: BlockInfo) -> int:
        """What ``info``'s signals say of it, for the reuse classes (``reuse.py``; unknown
        unless ``session_kinds`` with signals)."""
        if not self._kinds or info.session is None:
            return KIND_UNKNOWN
        return KIND_SHARED if info.shared else KIND_PRIVATE

    # ---- hooks --------------------------------------------------------------------------
    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._rec[info.key] = self._pending.pop(info.key, None) or self._observe_new(info, now)
        self._base[info.key] = self._clock(now)

    def _select(self, info: BlockInfo, now: float) -> None:
        """Feed the miniature copies; on a new verdict re-rank every evictable block."""
        if self.selector is not None and self.selector.use(info, now):
            self._reselect(now)

    def _reselect(self, now: float) -> None:
        """The selector's verdict flipped: rank by it from now on, every evictable block
        too."""
        self.by_value = self.selector.by_value  # type: ignore[union-attr]
        recs = self._rec
        for key in self.blocks:  # a block being inserted has no record yet: insert ranks it
            if key not in self._parked and key in recs:
                self._enqueue(key, now)

    def _on_access(self, key: Key, now: float) -> None:
        info = self.blocks[key]
        self._select(info, now)
        self._rec[key] = self.reuse.observe(self._rec[key], now, None, self._kind(info))
        self._base[key] = self._clock(now)

    def access(self, key: Key, now: float) -> None:
        info = self.blocks.get(key)
        if info is not None:
            self._use(key, info, now)

    def access_many(self, keys: Iterable[Key], now: float) -> None:
        """``access(key, now)`` for each key in order: the same decisions, less overhead."""
        blocks, use = self.blocks, self._use
        for key in keys:
            info = blocks.get(key)
            if info is not None:
                use(key, info, now)

    def insert(self, info: BlockInfo, now: float) -> None:
        """The base's ``insert`` with the hooks inlined (the same decisions, less overhead)."""
        key, blocks = info.key, self.blocks
        if key in blocks:
            self._use(key, blocks[key], now)
            return
        blocks[key] = info
        self._now = now
        rec = self._pending.pop(key, None) or self._observe_new(info, now)
        self._rec[key] = rec
        base = self._base[key] = now if self._time_clock else self.inflation
        if self.signals:
            self._index_signals(info)
        if self._held(key, now):
            if key not in self._parked:
                self.order.discard(key)
                self._parked.add(key)
        else:
            self._parked.discard(key)
            self.order.push(key, self._rank(info, rec, base))
        self._link(info, now)

    def evict(self, now: float) -> Key | None:
        """The base's ``evict`` inlined; ``clock="time"`` never reads ``inflation``: not kept."""
        if self._pin_heap and self._pin_heap[0][0] <= now:
            self._expire_pins(now)
        if self.signal_index.heap:
            self._expire_retention(now)
        pop, held, parked = self.order.pop, self._held, self._parked
        while True:
            key = pop()
            if key is None:
                return None
            if held(key, now):
                parked.add(key)
                continue
            if not self._time_clock or self._v_ref <= 0.0:
                self.inflation = max(self.inflation, self.score(key))
            self._drop(key, now)
            return key

    def _use(self, key: Key, info: BlockInfo, now: float) -> None:
        """A use of resident ``key``: the base's ``access`` with the hooks inlined."""
        self._now = now
        self._select(info, now)
        if self._learns:
            rec = self._rec[key] = self.reuse.observe(self._rec[key], now, None, self._kind(info))
        else:
            rec = self._rec[key] = _new_record(UseRecord, (0, now, 0, 1.0))
        base = self._base[key] = now if self._time_clock else self.inflation
        if key not in self._parked:
            self.order.push(key, self._rank(info, rec, base))

    def _rank(self, info: BlockInfo, rec: UseRecord, base: float) -> tuple:
        """``_priority`` of resident ``info`` from its record and clock value (after its band,
        with signals)."""
        h = base + (self._value(info, rec) if self.by_value else 0.0)
        if not self.signals:
            return (h, rec[1], -info.position)
        session, book = info.session, self.sessions  # sessions.band, inlined (a hot path)
        if session is not None and book is not None and not info.shared \
                and book.is_ended(session):
            return (DEAD, h, rec[1], -info.position)
        return (RETAINED if info.retain_until > self._now else NORMAL, h, rec[1], -info.position)

    def _on_remove(self, key: Key) -> None:
        self._base.pop(key, None)
        rec = self._rec.pop(key, None)
        if rec is not None:
            self.reuse.remember(key, rec)

    def _on_evict(self, key: Key, now: float) -> None:
        self.inflation = max(self.inflation, self.score(key))

    def _priority(self, key: Key, now: float) -> tuple:
        return self._rank(self.blocks[key], self._rec[key], self._base[key])

    def _ordering(self, key: Key, now: float) -> tuple:
        return self._rank(self.blocks[key], self._rec[key], self._base[key])  # banded already

    def _enqueue(self, key: Key, now: float) -> None:
        self.order.push(key, self._rank(self.blocks[key], self._rec[key], self._base[key]))
