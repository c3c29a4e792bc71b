"""``P̂``: how likely a block is to be used again soon, learned online from its uses.

Most blocks of a chat trace are never used again; a block used several times, at short
intervals, usually is. ``ReuseEstimator`` sorts every use into a class — how many times the
block has been used (1, 2, 3, 4 or more) and, from the second use on, how long it waited for
this use (``IRR_EDGES_S``, log-spaced) — and learns per class the share of uses that were
followed by another use within ``horizon_s``:

    P̂(class) = (followed_within_horizon + prior) / (reached + 2 · prior)

Counters are halved every ``half_life`` uses so the estimate follows drifting traffic. The
policy sets ``horizon_s`` to how long blocks stay in its tier, so ``P̂`` is the chance of a
hit *while* the block could still be resident. A bounded ghost history (``history`` keys,
least recently used forgotten first) keeps the records of blocks that left the tier.
Memory: O(history + classes). Pure: time comes in as arguments.
"""

from __future__ import annotations

import bisect
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass

IRR_EDGES_S = (1.0, 4.0, 16.0, 64.0, 256.0, 1024.0)  # ASSUMPTION: spans seconds to an hour
MAX_USES_CLASS = 4


@dataclass(frozen=True, slots=True)
class UseRecord:
    """A block's use history in brief: uses so far, last use time, and its class index."""

    uses: int
    last_s: float
    cls: int


class ReuseEstimator:
    """Online reuse probability per (uses, inter-use gap) class, plus a ghost history."""

    def __init__(self, *, history: int, horizon_s: float = 60.0, half_life: int = 100_000,
                 prior: float = 1.0) -> None:
        if history < 0 or horizon_s <= 0 or half_life < 1 or prior <= 0:
            raise ValueError("ReuseEstimator needs history >= 0, horizon_s > 0, "
                             "half_life >= 1, prior > 0")
        self.horizon_s = horizon_s
        self.half_life = half_life
        self.prior = prior
        self.reuse_classes = 1 + (MAX_USES_CLASS - 1) * (len(IRR_EDGES_S) + 1)
        n = 2 * self.reuse_classes + 1
        self._reached = [0.0] * n
        self._followed = [0.0] * n
        self._events = 0
        self._history_cap = history
        self._ghosts: OrderedDict[Hashable, UseRecord] = OrderedDict()

    @staticmethod
    def class_of(uses: int, gap_s: float | None) -> int:
        """Class of a repeat use: by uses (2..4+) and the gap since the last use (0: none)."""
        if uses <= 1 or gap_s is None:
            return 0
        row = min(uses, MAX_USES_CLASS) - 2
        return 1 + row * (len(IRR_EDGES_S) + 1) + bisect.bisect_right(IRR_EDGES_S, gap_s)

    def first_class(self, parent: UseRecord | None) -> int:
        """Class of a first use, from what is known of the block's parent.

        A block seen for the first time inherits its lineage: the class of a parent that was
        itself new in the same chain, else ``reuse_classes + 1 + parent's class`` (the new
        suffix behind a reused prefix behaves like that prefix's history), else 0 (unknown).
        """
        if parent is None:
            return 0
        if parent.uses <= 1:
            return parent.cls
        return self.reuse_classes + 1 + parent.cls

    def observe(self, prev: UseRecord | None, now: float,
                parent: UseRecord | None = None) -> UseRecord:
        """Record a use at ``now`` of a block whose previous record is ``prev`` (None: first
        use; then ``parent`` is the record of the block before it, if known)."""
        if prev is None:
            rec = UseRecord(1, now, self.first_class(parent))
        else:
            gap = max(0.0, now - prev.last_s)
            if gap <= self.horizon_s:
                self._followed[prev.cls] += 1.0
            rec = UseRecord(prev.uses + 1, now, self.class_of(prev.uses + 1, gap))
        self._reached[rec.cls] += 1.0
        self._events += 1
        if self._events >= self.half_life:
            self._decay()
        return rec

    def probability(self, rec: UseRecord) -> float:
        """``P̂``: the chance that a block with record ``rec`` is used within the horizon."""
        return (self._followed[rec.cls] + self.prior) / (self._reached[rec.cls] + 2 * self.prior)

    def curve(self) -> dict[int, float]:
        """``P̂`` of every class seen so far, by class index (for reports and tests)."""
        return {c: (self._followed[c] + self.prior) / (r + 2 * self.prior)
                for c, r in enumerate(self._reached) if r > 0}

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
        self._followed = [x * 0.5 for x in self._followed]
        self._events = 0
