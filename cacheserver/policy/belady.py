"""Belady's MIN (offline): evict the block whose next use is furthest away.

With the future known it also refuses to cache a block whose next use is later than that of
every evictable resident block (``admit`` says no), which makes it hit-optimal for one tier of
equal-sized blocks. It is blind to cost: hit-optimal is not cost-optimal, which is why a
gap-closed figure measured against it can exceed 1.

Two oracles tell it the future:

* :class:`NextUseOracle` (the simulator): every use of a key at an exact time the policy also
  sees as an event, so the next use after ``now`` is simply the first use time after ``now``.
* :class:`DueTimeOracle` (the daemon of the benchmark's ``belady-bound`` configuration, read
  from an oracle file, ``cacheserver/oracle_file.py``): the *due* times of the requests that
  contain each key, on ``time.monotonic()``. A request may be served later than it is due (it
  queues under load, or waits for its session's previous answer), and a pure time rule would
  then rank its blocks as unneeded exactly while it waits. So a due use counts as pending until
  the daemon sees the key used or until ``lag_s`` has passed since it was due: next use = the
  first use due after ``now - lag_s`` that is not consumed. ``lag_s`` bounds how long an unseen
  use (say, a request the engine served without the daemon) holds a block.

  A request is seen once per key (a *visit*), and a visit consumes one use: the earliest
  pending one due by then. The visit is the access of a LOOKUP hit (in whichever tier reported
  it), or the commit into an engine's pool of a block no lower tier holds (computed: nothing
  was found to access). A block committed while a lower tier holds it was fetched from there,
  so its LOOKUP's access was this request's visit, and the commit consumes nothing. Consuming
  every use due by the visit instead would also consume the next request of the same session
  whenever that one is due before the first is served (its due time is the session's arrival
  time; the driver sends it only after the answer), and rank the session's blocks as unneeded
  exactly while the client reads the answer or runs a tool. A request the daemon sees twice
  (re-admitted after preemption) consumes a use it does not own, and that use's own request
  later finds it consumed: its blocks rank by the use after it meanwhile.

A stored next use goes stale when its use is consumed through another tier or lapses; with a
due-time oracle the policy re-reads, before each choice, every stored next use that has fallen
due (a heap of them), so a stale entry never keeps a block it should give up.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import ClassVar

from asymcache.cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy


class NextUseOracle:
    """When each key is used next: built from every use time of every key (the whole trace).

    ``uses`` maps a key to its use times in ascending order, in the clock the policy sees.
    Memory: one float per use.
    """

    live: ClassVar[bool] = False  # uses happen at times the policy does not see as events

    def __init__(self, uses: Mapping[Key, Sequence[float]]) -> None:
        self._uses = uses

    def next_use(self, key: Key, now: float) -> float:
        """The first use of ``key`` strictly after ``now`` (``inf`` if none)."""
        times = self._uses.get(key)
        if not times:
            return math.inf
        i = bisect.bisect_right(times, now)
        return times[i] if i < len(times) else math.inf

    def used(self, key: Key, now: float) -> None:
        """``key`` was seen used at ``now`` (nothing to record: every use is an event)."""

    def uses_until(self, key: Key, now: float) -> int:
        """How many uses of ``key`` happened at or before ``now`` (0 for an unknown key)."""
        return bisect.bisect_right(self._uses.get(key, ()), now)

    def last_use(self, key: Key, now: float) -> float:
        """The latest use of ``key`` at or before ``now`` (``-inf`` if none)."""
        times = self._uses.get(key, ())
        i = bisect.bisect_right(times, now)
        return times[i - 1] if i else -math.inf

    def histories(self) -> Iterator[Sequence[float]]:
        """Every key's ascending use times (for fitting reuse statistics offline)."""
        return iter(self._uses.values())

    def __len__(self) -> int:
        return len(self._uses)


class DueTimeOracle(NextUseOracle):
    """Due times of the requests that contain each key; a due use stays pending until it is
    seen (:meth:`used`) or ``lag_s`` has passed (see the module docstring)."""

    live = True

    def __init__(self, uses: Mapping[Key, Sequence[float]], lag_s: float) -> None:
        if not lag_s >= 0:
            raise ValueError(f"lag_s must be >= 0, got {lag_s}")
        super().__init__(uses)
        self.lag_s = lag_s
        self._seen: dict[Key, int] = {}  # key -> how many of its uses are consumed

    def next_use(self, key: Key, now: float) -> float:
        """The first unconsumed use of ``key`` due after ``now - lag_s`` (``inf`` if none)."""
        times = self._uses.get(key)
        if not times:
            return math.inf
        i = max(bisect.bisect_right(times, now - self.lag_s), self._seen.get(key, 0))
        return times[i] if i < len(times) else math.inf

    def used(self, key: Key, now: float) -> None:
        """A request was seen using ``key`` at ``now`` (one visit, module docstring): consume
        the earliest pending use due by ``now``, if any (lapsed uses are skipped)."""
        times = self._uses.get(key)
        if times:
            i = max(bisect.bisect_right(times, now - self.lag_s), self._seen.get(key, 0))
            if i < len(times) and times[i] <= now:
                self._seen[key] = i + 1


@register_policy("belady")
class BeladyPolicy(ResidencyPolicy):
    """MIN with bypass; needs ``oracle=NextUseOracle(...)`` (or a :class:`DueTimeOracle`)."""

    offline = True

    def __init__(self, capacity: int, *, oracle: NextUseOracle | None = None,
                 **kwargs: object) -> None:
        if oracle is None:
            raise ValueError("belady needs the future: pass oracle=NextUseOracle (the "
                             "simulator) or give the daemon an oracle_file")
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self.oracle = oracle
        self._next: dict[Key, float] = {}
        self._due: list[tuple[float, int, Key, float]] = []  # (check at, seq, key, stored)
        self._seq = itertools.count()

    def admit(self, info: BlockInfo, now: float) -> bool:
        """Cache unless the tier is full and ``info`` is needed later than every victim."""
        if len(self.blocks) < self.capacity:
            return True
        self._recheck(now)
        top = self.peek_victim(now)
        if top is None:
            return False
        return self.oracle.next_use(info.key, now) < -top[1][0]

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        if self.tier == "gpu" and not getattr(info, "where", 0):
            # an engine committed a block no lower level holds: its request computed it and
            # this is that request's visit (a fetched block's visit was its LOOKUP's access)
            self.oracle.used(info.key, now)
        self._set_next(info.key, now)

    def _on_access(self, key: Key, now: float) -> None:
        self.oracle.used(key, now)
        self._set_next(key, now)

    def _on_remove(self, key: Key) -> None:
        self._next.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return (-self._next[key], self.blocks[key].position)

    def _pop(self, now: float) -> Key | None:
        self._recheck(now)
        return super()._pop(now)

    def _set_next(self, key: Key, now: float) -> None:
        nxt = self._next[key] = self.oracle.next_use(key, now)
        if self.oracle.live and nxt < math.inf:
            heapq.heappush(self._due, (nxt, next(self._seq), key, nxt))
            if len(self._due) > 4 * len(self.blocks) + 1024:  # entries of re-ranked keys
                self._due = [(t, next(self._seq), k, t) for k, t in self._next.items()
                             if t < math.inf]
                heapq.heapify(self._due)

    def _recheck(self, now: float) -> None:
        """Re-read every stored next use that has fallen due (only with a live oracle): one
        consumed elsewhere or lapsed moves on; one still pending is checked again once its
        lag has passed."""
        due, lag = self._due, getattr(self.oracle, "lag_s", 0.0)
        while due and due[0][0] <= now:
            _, _, key, stored = heapq.heappop(due)
            if self._next.get(key) != stored:
                continue  # re-ranked since, or gone
            nxt = self.oracle.next_use(key, now)
            if nxt == stored:
                if stored + lag > now:
                    heapq.heappush(due, (stored + lag, next(self._seq), key, stored))
                continue
            self._set_next(key, now)
            if key not in self._parked:
                self._enqueue(key, now)
