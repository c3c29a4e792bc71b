"""The residency-policy interface shared by the daemon and the trace simulator.

A policy decides, for **one tier of bounded capacity**, which held block to give up next. It is a
pure object: no torch, no zmq, no I/O, no clock of its own (every event carries ``now`` in
seconds), so the daemon and ``asymcache simulate`` drive the very same objects.

Events a policy receives, all amortized O(log n):

* ``insert(info, now)`` — the block entered this tier (after ``admit`` said yes);
* ``access(key, now)`` — the block was used (a hit, or a re-reference while resident);
* ``access_many(keys, now)`` / ``insert_many(infos, now)`` — the same for a batch, in order,
  with exactly the decisions of one call per block (the daemon's call sites use these);
* ``remove(key)`` — the block left this tier for a reason other than ``evict`` (deleted,
  invalidated, moved by the caller);
* ``protect(key)`` / ``unprotect(key)`` — the block's first lease is taken / its last dropped
  (who holds how many is the daemon's session table, ``cacheserver/leases.py``);
* ``pin(key, until)`` / ``unpin(key)`` — a pin, optionally with a TTL (``until`` in the same
  clock as ``now``; ``None`` = until unpinned). An expired TTL pin lapses by itself;
* ``set_backing(key, tier)`` — the next tier that still holds the block (``None`` = nowhere), so
  cost-aware policies can price a miss as the cheaper of reloading and recomputing;
* ``set_spill_tier(tier)`` — where this tier's victims are demoted to (``None``: dropped), so a
  block with no lower copy yet is priced at what it will cost once demoted there.
* ``resignal(key, now)`` / ``session_ended(session, now)`` — a block's client signals changed
  (its ``session``, ``shared`` or ``retain_until``) / a client ended a session. Only a policy
  built with ``signals=True`` uses them: it ranks in three bands (``sessions.py``): blocks of
  ended sessions first, blocks under retention last, its own order within each band.

And the decision: ``evict(now)`` removes and returns the lowest-value *unprotected, unpinned*
block, or ``None`` when every held block is protected. Protected and pinned blocks are never
victims. ``admit(info, now)`` says whether a block is worth placing in this tier at all.

``capacity`` is counted in blocks; the caller enforces it (it calls ``evict`` until there is
room) and policies use it to decide admission. Policies with ``tracks_structure`` keep the
resident parent/child links: under ``prefix`` reuse, in the GPU tier, a block whose child is
resident is not a victim (leaves go first, like a radix tree), since dropping it would strand
its descendants.

Keys are opaque hashables (16-byte block keys in the daemon, ints in the simulator).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from asymcache.cacheserver.policy.holds import Holds
from asymcache.cacheserver.policy.order import HeapOrder
from asymcache.cacheserver.policy.registry import (
    create_policy,
    policy_class,
    policy_names,
    register_policy,
)
from asymcache.cacheserver.policy.sessions import SessionBook, SignalIndex, band

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.cost import CostModel

__all__ = [
    "REUSE_SEMANTICS", "BlockInfo", "HeapOrder", "Key", "ResidencyPolicy", "Reuse",
    "create_policy", "policy_class", "policy_names", "register_policy",
]

Key = Hashable
Reuse = Literal["prefix", "msa"]
REUSE_SEMANTICS: tuple[str, ...] = ("prefix", "msa")


@dataclass(slots=True)
class BlockInfo:
    """What a policy may know about a block.

    ``position`` is the block's index in its sequence, so its first token sits at
    ``position * n_tokens`` for full blocks; ``parent`` is the previous block's key (``None``
    for the first block). The client signals (``sessions.py``): ``session`` is the latest
    session that used the block (``None``: none said), ``shared`` that another session used it
    too, ``retain_until`` until when a client asked to keep it (0: never asked).
    """

    key: Key
    parent: Key | None
    position: int
    n_tokens: int
    n_bytes: int
    session: Key | None = None
    shared: bool = False
    retain_until: float = 0.0


class ResidencyPolicy(Holds, ABC):
    """Victim selection for one tier. Subclasses keep per-block state and give a priority.

    The base keeps the bookkeeping every policy needs — block infos, leased keys and pins with
    TTLs (:class:`~asymcache.cacheserver.policy.holds.Holds`), and the victim order (a
    :class:`HeapOrder`, lowest priority evicted first) — and guarantees that ``evict`` never
    returns a protected or pinned block. A protected block is *parked*: out of the victim
    order, its state still updated on access, and put back with a fresh priority when its last
    lease or pin goes. Subclasses implement ``_on_insert``, ``_on_access``, ``_on_remove``
    (state) and ``_priority`` (a sortable tuple computed from that state); greedy-dual policies
    update their inflation value in ``_on_evict``. A policy whose order is not a heap of static
    priorities overrides ``_enqueue``, ``_dequeue`` and ``_pop``.
    """

    name: ClassVar[str] = ""
    offline: ClassVar[bool] = False  # True for oracles that need the future (simulator only)
    tracks_structure: ClassVar[bool] = False  # keep resident parent/child links (leaf-first)
    prices_backing: ClassVar[bool] = False  # the priority depends on the backing tier
    supports_signals: ClassVar[bool] = True  # False: a victim order that is not a heap
    signal_aware: ClassVar[bool] = False  # built with signals=True where clients' signals are
    # on (the daemon's ``signals``, the simulator's ``--signals``): asym, lru_signals

    def __init__(
        self,
        capacity: int,
        *,
        semantics: Reuse = "prefix",
        cost_model: CostModel | None = None,
        tier: str = "gpu",
        signals: bool = False,
    ) -> None:
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        if semantics not in REUSE_SEMANTICS:
            raise ValueError(f"semantics must be one of {REUSE_SEMANTICS}, got {semantics!r}")
        if signals and not self.supports_signals:
            raise ValueError(f"policy {self.name!r} does not rank by client signals")
        self.capacity = capacity
        self.semantics: Reuse = semantics
        self.cost_model = cost_model
        # the cost model of each namespace's engine (the daemon's, shared by its policies):
        # a block is priced with its own engine's model when known, else with ``cost_model``
        self.namespace_costs: Mapping[Key, CostModel] | None = None
        self.tier = tier
        self.blocks: dict[Key, BlockInfo] = {}
        self.order = HeapOrder()
        self._init_holds()  # leases, pins, resident children: what parks a block (holds.py)
        self._backing: dict[Key, str | None] = {}
        self._now = 0.0  # latest event time seen, for re-ranking on set_backing
        self.spill_tier: str | None = None
        # leaves first: only where a request places its blocks front to back (the GPU tier);
        # below it blocks arrive in eviction order and a chain may span several tiers
        self.leaf_first = self.tracks_structure and semantics == "prefix" and tier == "gpu"
        # client signals (sessions.py): bands from the chain's book of ended sessions; the
        # index re-ranks a session's blocks when it ends, and retained blocks when they lapse
        self.signals = signals
        self.sessions: SessionBook | None = None
        self.signal_index = SignalIndex()

    def set_sessions(self, book: SessionBook | None) -> None:
        """Read ended sessions from ``book`` (the chain's, shared by every level's policy)."""
        self.sessions = book

    def set_namespace_costs(self, costs: Mapping[Key, CostModel] | None) -> None:
        """Price each namespace's blocks with ``costs[namespace]`` (the daemon's
        ``EngineCosts.by_ns``, read live) where it has one."""
        self.namespace_costs = costs

    def cost_of(self, info: BlockInfo) -> CostModel | None:
        """The cost model that prices ``info``: its namespace's engine's (the daemon's records
        carry a ``namespace``), else the policy's own."""
        costs = self.namespace_costs
        if costs:
            model = costs.get(getattr(info, "namespace", None))
            if model is not None:
                return model
        return self.cost_model

    # ---- events -------------------------------------------------------------------------
    def admit(self, info: BlockInfo, now: float) -> bool:
        """Whether ``info`` is worth placing in this tier at all (default: always)."""
        return True

    def insert(self, info: BlockInfo, now: float) -> None:
        if info.key in self.blocks:
            self.access(info.key, now)
            return
        self.blocks[info.key] = info
        self._now = now
        self._on_insert(info, now)
        if self.signals:
            self._index_signals(info)
        self._refresh(info.key, now)
        if self.tracks_structure:
            self._link(info, now)

    def access(self, key: Key, now: float) -> None:
        if key not in self.blocks:
            return
        self._now = now
        self._on_access(key, now)
        if key not in self._parked:
            self._enqueue(key, now)

    def access_many(self, keys: Iterable[Key], now: float) -> None:
        """``access(key, now)`` for each of ``keys`` in order (policies may do it faster)."""
        for key in keys:
            self.access(key, now)

    def insert_many(self, infos: Iterable[BlockInfo], now: float) -> None:
        """``insert(info, now)`` for each of ``infos`` in order (policies may do it faster)."""
        for info in infos:
            self.insert(info, now)

    def remove(self, key: Key, now: float = 0.0) -> None:
        if key not in self.blocks:
            return
        self._dequeue(key)
        self._parked.discard(key)
        self._drop(key, now)

    def set_backing(self, key: Key, tier: str | None) -> None:
        if key not in self.blocks or self._backing.get(key) == tier:
            return
        if tier is None:
            self._backing.pop(key, None)
        else:
            self._backing[key] = tier
        if self.prices_backing and key not in self._parked:
            self._enqueue(key, self._now)

    def set_spill_tier(self, tier: str | None) -> None:
        """Victims of this tier are demoted to ``tier`` (``None``: they are dropped)."""
        self.spill_tier = tier

    def backing(self, key: Key) -> str | None:
        return self._backing.get(key)

    def resignal(self, key: Key, now: float) -> None:
        """Resident ``key``'s signals changed (its info's ``session``, ``shared`` or
        ``retain_until``, updated by the caller): re-index and re-rank it."""
        if not self.signals or key not in self.blocks:
            return
        self._now = max(self._now, now)
        self._index_signals(self.blocks[key])
        if key not in self._parked:
            self._enqueue(key, now)

    def session_ended(self, session: Key, now: float) -> None:
        """A client ended ``session`` (already in the book): its blocks that no other session
        used move to the first band."""
        if not self.signals:
            return
        for key in self.signal_index.keys_of(session):
            if key not in self._parked:
                self._enqueue(key, now)

    # ---- decision -----------------------------------------------------------------------
    def evict(self, now: float) -> Key | None:
        """Remove and return the lowest-value evictable block, or ``None`` if all are held."""
        self._expire_pins(now)
        if self.signal_index.heap:
            self._expire_retention(now)
        while True:
            key = self._pop(now)
            if key is None:
                return None
            if self._held(key, now):
                self._parked.add(key)
                continue
            self._on_evict(key, now)
            self._drop(key, now)
            return key

    def peek_victim(self, now: float) -> tuple[Key, tuple] | None:
        """``(key, priority)`` of the block ``evict(now)`` would take, without taking it.

        Only for policies ordered by ``self.order`` (the heap); others return ``None``.
        """
        if self._pin_heap and self._pin_heap[0][0] <= now:  # _expire_pins' test (a hot path)
            self._expire_pins(now)
        if self.signal_index.heap:
            self._expire_retention(now)
        while True:
            top = self.order.peek()
            if top is None or not self._held(top[0], now):
                return top
            self.order.discard(top[0])
            self._parked.add(top[0])

    def cheapest_of(self, keys: Iterable[Key], now: float) -> Key | None:
        """The lowest-value evictable block among ``keys`` (a tenant's own blocks, for its
        quota), or ``None``; nothing changes (the caller removes it). O(len(keys))."""
        self._expire_pins(now)
        best: Key | None = None
        best_rank: tuple | None = None
        for key in keys:
            if key not in self.blocks or self._held(key, now):
                continue
            rank = self._ordering(key, now)
            if best_rank is None or rank < best_rank:
                best, best_rank = key, rank
        return best

    def victims(self, n: int, now: float) -> list[Key]:
        out: list[Key] = []
        while len(out) < n:
            key = self.evict(now)
            if key is None:
                break
            out.append(key)
        return out

    # ---- queries ------------------------------------------------------------------------
    @property
    def ranking(self) -> str | None:
        """What orders the victims now, for a policy that switches (``"value"`` or
        ``"recency"``: ``asym``'s selector); None for one that never switches."""
        return None

    def __len__(self) -> int:
        return len(self.blocks)

    def __contains__(self, key: Key) -> bool:
        return key in self.blocks

    # ---- subclass hooks -----------------------------------------------------------------
    @abstractmethod
    def _on_insert(self, info: BlockInfo, now: float) -> None:
        """Create ``info.key``'s state."""

    @abstractmethod
    def _on_access(self, key: Key, now: float) -> None:
        """Update ``key``'s state for a use at ``now``."""

    @abstractmethod
    def _on_remove(self, key: Key) -> None:
        """Drop ``key``'s state."""

    @abstractmethod
    def _priority(self, key: Key, now: float) -> tuple:
        """Sort key of ``key`` in the victim order: the lowest is evicted first."""

    def _on_evict(self, key: Key, now: float) -> None:
        """Called just before ``key`` is evicted (greedy-dual policies raise their L here)."""

    def _pop(self, now: float) -> Key | None:
        """Take the lowest-priority key out of the victim order (``None`` if empty)."""
        return self.order.pop()

    def _enqueue(self, key: Key, now: float) -> None:
        """Put ``key`` into the victim order with its current priority (or re-rank it)."""
        self.order.push(key, self._ordering(key, now))

    def _ordering(self, key: Key, now: float) -> tuple:
        """``key``'s place in the victim order: its priority, after its band with signals."""
        if self.signals:
            return (band(self.blocks[key], self.sessions, now), *self._priority(key, now))
        return self._priority(key, now)

    def _dequeue(self, key: Key) -> None:
        """Take ``key`` out of the victim order if it is there."""
        self.order.discard(key)

    # ---- internals ----------------------------------------------------------------------
    def _drop(self, key: Key, now: float) -> None:
        info = self.blocks.pop(key)
        self._backing.pop(key, None)
        if self.signals:
            self.signal_index.unindex(key)
        self._on_remove(key)
        if self.tracks_structure:
            self._unlink(info, now)

    def _index_signals(self, info: BlockInfo) -> None:
        self.signal_index.index(info, self._now, self.blocks)

    def _expire_retention(self, now: float) -> None:
        """Re-rank blocks whose retention lapsed by ``now`` (they leave the last band)."""
        self._now = max(self._now, now)
        for key, until in self.signal_index.lapsed(now):
            info = self.blocks.get(key)
            if info is not None and info.retain_until == until and key not in self._parked:
                self._enqueue(key, now)
