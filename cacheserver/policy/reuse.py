"""``P̂``: how likely a block is to be used again, learned online from the uses of blocks.

Most blocks of a chat trace are never used again; a block used several times, at short
intervals, usually is. ``ReuseEstimator`` sorts every use into a class and learns, per class,
the share of uses that were followed by another use of the same block:

* a repeat use is classed by the block's uses so far (2, 3, 4 or more) and the gap since its
  previous use (``GAP_EDGES_S``);
* a first use by its lineage: its parent's class if the parent was new too, else "behind a
  reused block of class c" (the new suffix after a reused prefix behaves like that prefix),
  else "unknown". (Classes by depth were tried and dropped: on the Mooncake synthetic trace
  they made ``asym`` worse than LRU; docs/policy.md.)

With client signals (``sessions.py``) every class above is split three ways by what the block's
signals say of it: no session said, one session's own, or used by several sessions
(``kind``). So the estimate learns from sessions' behaviour: how often a session's private
context is used again after a gap (its client came back), against a prefix that sessions share.
A first use is classed when its request's SIGNAL arrives (:meth:`ReuseEstimator.reclass`).

``probability(cls) = (followed + prior) / (reached + 2·prior)``, capped at 1. Counters are
halved every ``half_life`` uses so the estimates follow drifting traffic. ``typical_gap_s`` is
the median gap between consecutive uses of a block, over all classes.

``heat`` (with ``heat_scale > 0``) counts a block's uses weighted by their age: at each use
``heat ← 1 + heat · exp(-gap / θ)``, ``θ = heat_scale ×`` the typical gap (1.0 for a first use;
it stays 1.0 without heat). The classes above know how likely *a* next use is; heat tells a
block used often and lately from one used as often long ago or once: over an hour a popular
system prompt and a rare one both land in the "4+ uses" classes, their heats differ by their
rates. (This is the combined recency-frequency of LRFU, Lee et al. 2001, in its exponential
form: with ``θ`` equal to the policy's ``τ``, ranking by ``last use + τ · ln(heat)`` is ranking
by the decayed count now.)

A bounded ghost history (``history`` keys, least recently used forgotten first) keeps the
records of blocks that left the tier, so a block that comes back keeps its history.
Memory: O(history + classes). Pure: time comes in as arguments.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Hashable
from typing import NamedTuple

GAP_EDGES_S = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # ASSUMPTION: seconds to an hour
GAP_BUCKETS_S = tuple(2.0**k for k in range(-2, 13))  # 0.25 s .. 4096 s, for the median gap
MAX_USES_CLASS = 4
REPEAT_HISTORIES = 1 + (MAX_USES_CLASS - 1) * (len(GAP_EDGES_S) + 1)  # 0 = unknown
HISTORIES = 2 * REPEAT_HISTORIES  # per kind
KIND_UNKNOWN, KIND_PRIVATE, KIND_SHARED = 0, 1, 2  # what the signals say of a block
KINDS = 3
DEFAULT_GAP_S = 60.0  # ASSUMPTION: the typical gap until enough gaps were seen
MIN_GAPS = 32.0
_ROW = len(GAP_EDGES_S) + 1  # classes per uses row


class UseRecord(NamedTuple):
    """A block's use history in brief: uses so far, last use time, and its class (immutable;
    a named tuple: one is made per use, so it must be cheap to build)."""

    uses: int
    last_s: float
    cls: int
    heat: float  # uses weighted by exp(-age / time constant) at the last use (module doc)


_new_record = tuple.__new__  # UseRecord from a tuple without the generated __new__ (hot path)


class ReuseEstimator:
    """Online reuse probability per class, plus a ghost history."""

    def __init__(self, *, history: int, half_life: int = 100_000, prior: float = 1.0,
                 heat_scale: float = 0.0) -> None:
        if history < 0 or half_life < 1 or prior <= 0 or not heat_scale >= 0:
            raise ValueError("ReuseEstimator needs history >= 0, half_life >= 1, prior > 0, "
                             "heat_scale >= 0")
        self.half_life, self.prior = half_life, prior
        self.heat_scale = heat_scale  # heat's time constant / the typical gap (0: no heat)
        self._reached = [0.0] * (HISTORIES * KINDS)
        self._followed = [0.0] * (HISTORIES * KINDS)
        self._gaps = [0.0] * (len(GAP_BUCKETS_S) + 1)
        # ``probability(c)`` of every class, kept current as the counters move (read-only
        # outside): a policy reads it for every rank, several times per use
        self.p_by_class = [self._p(c) for c in range(HISTORIES * KINDS)]
        self.typical_s = DEFAULT_GAP_S  # ``typical_gap_s()``, also read per rank
        self._events = 0
        self._history_cap = history
        self._ghosts: OrderedDict[Hashable, UseRecord] = OrderedDict()

    @staticmethod
    def repeat_class(uses: int, gap_s: float) -> int:
        """Class of a repeat use: uses (2..4+) and the gap since the previous use."""
        row = min(uses, MAX_USES_CLASS) - 2
        return 1 + row * (len(GAP_EDGES_S) + 1) + bisect.bisect_right(GAP_EDGES_S, gap_s)

    @staticmethod
    def first_class(parent: UseRecord | None) -> int:
        """Class of a first use, from its parent's record (see module docstring)."""
        if parent is None:
            return 0
        cls = parent.cls % HISTORIES  # the lineage, whatever the parent's kind
        if parent.uses <= 1:
            return cls
        return REPEAT_HISTORIES + cls % REPEAT_HISTORIES

    def observe(self, prev: UseRecord | None, now: float,
                parent: UseRecord | None = None, kind: int = KIND_UNKNOWN) -> UseRecord:
        """Record a use at ``now`` of a block whose previous record is ``prev`` (None: a first
        use, classed by ``parent``, the record of the block before it, if known); ``kind``:
        what its signals say of it (``KIND_*``; always unknown without signals)."""
        if prev is None:
            rec = UseRecord(1, now, self.first_class(parent) + kind * HISTORIES, 1.0)
        else:
            uses, last_s, cls, heat = prev
            gap = now - last_s
            if gap < 0.0:
                gap = 0.0
            if self.heat_scale > 0.0:
                heat = 1.0 + heat * math.exp(-gap / (self.heat_scale * self.typical_s))
            followed = self._followed
            followed[cls] += 1.0
            self.p_by_class[cls] = min(1.0, (followed[cls] + self.prior)
                                       / (self._reached[cls] + 2 * self.prior))  # _p inlined
            self._gaps[bisect.bisect_left(GAP_BUCKETS_S, gap)] += 1.0
            uses += 1
            row = (uses if uses < MAX_USES_CLASS else MAX_USES_CLASS) - 2
            cls = 1 + row * _ROW + bisect.bisect_right(GAP_EDGES_S, gap) + kind * HISTORIES
            rec = _new_record(UseRecord, (uses, now, cls, heat))
        cls, reached = rec[2], self._reached
        reached[cls] += 1.0
        self.p_by_class[cls] = min(1.0, (self._followed[cls] + self.prior)
                                   / (reached[cls] + 2 * self.prior))  # _p inlined
        self._events += 1
        if self._events % 1024 == 0:
            self.typical_s = self._median_gap()
        if self._events >= self.half_life:
            self._decay()
        return rec

    def reclass(self, rec: UseRecord, kind: int) -> UseRecord:
        """``rec``, the latest use of a block, classed again for the ``kind`` its signals now
        say (the request's SIGNAL comes after its uses were counted); the count moves along."""
        cls = rec.cls % HISTORIES + kind * HISTORIES
        if cls == rec.cls:
            return rec
        self._reached[rec.cls] = max(0.0, self._reached[rec.cls] - 1.0)
        self._reached[cls] += 1.0
        self.p_by_class[rec.cls] = self._p(rec.cls)
        self.p_by_class[cls] = self._p(cls)
        return _new_record(UseRecord, (rec.uses, rec.last_s, cls, rec.heat))

    def probability(self, cls: int) -> float:
        """The chance that a use of class ``cls`` is followed by another use of the block."""
        return self.p_by_class[cls]

    def _p(self, cls: int) -> float:
        p = (self._followed[cls] + self.prior) / (self._reached[cls] + 2 * self.prior)
        return min(1.0, p)

    def typical_gap_s(self) -> float:
        """The median gap between consecutive uses of a block (``DEFAULT_GAP_S`` until known)."""
        return self.typical_s

    def table(self) -> dict[int, tuple[float, float]]:
        """``class -> (reached, P̂)`` for every class seen (for reports and tests)."""
        return {s: (r, self.probability(s)) for s, r in enumerate(self._reached) if r > 0}

    # ---- ghost history ------------------------------------------------------------------
    def peek(self, key: Hashable) -> UseRecord | None:
        """The ghost record of ``key`` without forgetting it."""
        return self._ghosts.get(key)

    def recall(self, key: Hashable) -> UseRecord | None:
        """The record kept for ``key`` after it left the tier (None if unknown); forgets it."""
        return self._ghosts.pop(key, None)

    def remember(self, key: Hashable, rec: UseRecord) -> None:
        """Keep ``key``'s record after it left the tier (bounded, LRU forgetting)."""
        if self._history_cap == 0:
            return
        self._ghosts[key] = rec
        self._ghosts.move_to_end(key)
        if len(self._ghosts) > self._history_cap:
            self._ghosts.popitem(last=False)

    def _median_gap(self) -> float:
        total = sum(self._gaps)
        if total < MIN_GAPS:
            return self.typical_s
        acc = 0.0
        for i, n in enumerate(self._gaps[:-1]):
            acc += n
            if acc >= 0.5 * total:
                return GAP_BUCKETS_S[i]
        return GAP_BUCKETS_S[-1]

    def _decay(self) -> None:
        self._reached = [x * 0.5 for x in self._reached]
        self._followed = [x * 0.5 for x in self._followed]
        self._gaps = [x * 0.5 for x in self._gaps]
        self.p_by_class = [self._p(c) for c in range(len(self._reached))]
        self._events = 0
