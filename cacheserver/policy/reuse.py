"""``P̂``: how likely a block is to be used again, learned online from the uses of blocks.

Most blocks of a chat trace are never used again; a block used several times, at short
intervals, usually is. ``ReuseEstimator`` sorts every use into a *class* and learns, per class,
how often such a use was followed by another one and after how long:

* a repeat use is classed by the block's uses so far (2, 3, 4 or more) and the gap since its
  previous use (``GAP_EDGES_S``, powers of 4 seconds);
* a first use inherits its lineage: the class of its parent if the parent was new too, else a
  class derived from the parent's class (the new suffix behind a reused prefix behaves like
  that prefix's history), else the "unknown" class 0.

Per class it keeps ``reached`` (uses that put a block in the class) and a histogram of the
gaps to the next use (``GAP_BUCKETS_S``, powers of 2 seconds), both halved every
``half_life`` uses so the estimates follow drifting traffic. From these:

* ``probability(cls)`` = ``(followed + prior) / (reached + 2·prior)``, the chance of another use;
* ``expiry_s(cls)`` = the gap within which ``quantile`` of the observed next uses came;
* ``stale_probability(cls)`` = the chance of another use for a block idle longer than that.

A bounded ghost history (``history`` keys, least recently used forgotten first) keeps the
records of blocks that left the tier. Memory: O(history + classes × buckets). Pure: time comes
in as arguments.
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

GAP_EDGES_S = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # classes of repeat uses (ASSUMPTION)
GAP_BUCKETS_S = tuple(2.0**k for k in range(-2, 13))  # 0.25 s .. 4096 s histogram edges
MAX_USES_CLASS = 4
REPEAT_CLASSES = 1 + (MAX_USES_CLASS - 1) * (len(GAP_EDGES_S) + 1)
MIN_SAMPLES = 8.0  # follow-ups a class needs before its expiry is trusted


@dataclass(frozen=True, slots=True)
class UseRecord:
    """A block's use history in brief: uses so far, last use time, and its class."""

    uses: int
    last_s: float
    cls: int


class ReuseEstimator:
    """Online reuse probability and reuse-gap quantiles per class, plus a ghost history."""

    def __init__(self, *, history: int, quantile: float = 0.9, half_life: int = 100_000,
                 prior: float = 1.0) -> None:
        if history < 0 or not 0 < quantile <= 1 or half_life < 1 or prior <= 0:
            raise ValueError("ReuseEstimator needs history >= 0, 0 < quantile <= 1, "
                             "half_life >= 1, prior > 0")
        self.quantile, self.half_life, self.prior = quantile, half_life, prior
        n = 2 * REPEAT_CLASSES + 1
        self._reached = [0.0] * n
        self._gaps = [[0.0] * (len(GAP_BUCKETS_S) + 1) for _ in range(n)]
        self._events = 0
        self._history_cap = history
        self._ghosts: OrderedDict[Hashable, UseRecord] = OrderedDict()

    @staticmethod
    def repeat_class(uses: int, gap_s: float) -> int:
        """Class of a repeat use by uses (2..4+) and the gap since the previous use."""
        row = min(uses, MAX_USES_CLASS) - 2
        return 1 + row * (len(GAP_EDGES_S) + 1) + bisect.bisect_right(GAP_EDGES_S, gap_s)

    @staticmethod
    def first_class(parent: UseRecord | None) -> int:
        """Class of a first use, from its parent's record (see module docstring)."""
        if parent is None:
            return 0
        if parent.uses <= 1:
            return parent.cls
        return REPEAT_CLASSES + parent.cls

    def observe(self, prev: UseRecord | None, now: float,
                parent: UseRecord | None = None) -> UseRecord:
        """Record a use at ``now`` of a block whose previous record is ``prev`` (None: a first
        use, classed by ``parent``, the record of the block before it if known)."""
        if prev is None:
            rec = UseRecord(1, now, self.first_class(parent))
        else:
            gap = max(0.0, now - prev.last_s)
            self._gaps[prev.cls][bisect.bisect_left(GAP_BUCKETS_S, gap)] += 1.0
            rec = UseRecord(prev.uses + 1, now, self.repeat_class(prev.uses + 1, gap))
        self._reached[rec.cls] += 1.0
        self._events += 1
        if self._events >= self.half_life:
            self._decay()
        return rec

    def probability(self, cls: int) -> float:
        """The chance that a use of class ``cls`` is followed by another one."""
        return (sum(self._gaps[cls]) + self.prior) / (self._reached[cls] + 2 * self.prior)

    def expiry_s(self, cls: int) -> float:
        """The gap within which ``quantile`` of class ``cls``'s next uses came (inf: unknown)."""
        hist = self._gaps[cls]
        total = sum(hist)
        if total < MIN_SAMPLES:
            return math.inf
        acc = 0.0
        for i, n in enumerate(hist):
            acc += n
            if acc >= self.quantile * total:
                return GAP_BUCKETS_S[i] if i < len(GAP_BUCKETS_S) else math.inf
        return math.inf

    def stale_probability(self, cls: int) -> float:
        """The chance of another use for a class-``cls`` block idle past ``expiry_s(cls)``."""
        limit = self.expiry_s(cls)
        if math.isinf(limit):
            return self.probability(cls)
        hist = self._gaps[cls]
        cut = bisect.bisect_left(GAP_BUCKETS_S, limit) + 1
        early, late = sum(hist[:cut]), sum(hist[cut:])
        return (late + self.prior) / (max(0.0, self._reached[cls] - early) + 2 * self.prior)

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

    def _decay(self) -> None:
        self._reached = [x * 0.5 for x in self._reached]
        self._gaps = [[x * 0.5 for x in row] for row in self._gaps]
        self._events = 0
