"""Offline oracles for analysis (simulator only): ``asym_oracle``, ``dead_first``, ``reuse_fit``.

* ``asym_oracle`` is ``asym`` with ``P̂`` replaced by what the future holds: 1 if the block is
  used again within ``horizon_s`` (default: ever), else ``FLOOR``. It bounds what a better
  reuse predictor could add to ``asym``'s ranking.
* ``dead_first`` is LRU (``lru_tail`` ties) that knows which blocks are dead — never used
  again — and evicts those first (and does not admit one into a full tier). It needs no cost
  model and no timing: it shows how much of the gap to Belady is knowing *which* blocks come
  back, as opposed to *when* they do.

* ``reuse_fit`` is an online ranking whose statistics are fit offline on the whole trace
  (EVA-style, Beckmann and Sanchez, HPCA 2017): a block's class is its use count so far, and it
  is evicted by the lowest chance of being used again within a horizon given its class and the
  time since its last use. Nothing it looks at per block is from the future; only the
  class-conditional gap distributions are. It stands for the best a predictor from use counts
  and ages could do on the trace, trained on the test data.

docs/policy.md uses them, with Belady, to split the gap into prediction and timing.
"""

from __future__ import annotations

import bisect
import math
import random
from dataclasses import dataclass

from asymcache.cacheserver.policy.asym import AsymConfig, AsymPolicy
from asymcache.cacheserver.policy.base import BlockInfo, Key, ResidencyPolicy, register_policy
from asymcache.cacheserver.policy.lru import LRUTailPolicy
from asymcache.cacheserver.policy.reuse import UseRecord
from asymcache.ops.sim.belady import NextUseOracle

FLOOR = 1e-3  # P̂ of a block that is not used again (not 0: values stay comparable)


@dataclass(frozen=True)
class AsymOracleConfig(AsymConfig):
    """``AsymConfig`` plus the horizon of "used again"; no miniature selector by default."""

    select: bool = False
    horizon_s: float = math.inf


@register_policy("asym_oracle")
class AsymOraclePolicy(AsymPolicy):
    """``asym`` ranking by value, with ``P̂`` from the trace's future (``oracle=``)."""

    offline = True
    config_class = AsymOracleConfig

    def __init__(self, capacity: int, *, oracle: NextUseOracle | None = None,
                 config: AsymOracleConfig | None = None, **kwargs: object) -> None:
        if oracle is None:
            raise ValueError("asym_oracle needs the future: pass oracle=NextUseOracle")
        self.oracle = oracle
        self.horizon_s = (config or AsymOracleConfig()).horizon_s
        super().__init__(capacity, config=config or AsymOracleConfig(), **kwargs)  # type: ignore[arg-type]

    def reuse_probability(self, info: BlockInfo, rec: UseRecord) -> float:
        """1 if ``info`` is used again within the horizon after its last use, else ``FLOOR``.

        A block never used again has an infinite gap, which no horizon (not even an infinite
        one) admits."""
        gap = self.oracle.next_use(info.key, rec.last_s) - rec.last_s
        return 1.0 if math.isfinite(gap) and gap <= self.horizon_s else FLOOR


@register_policy("dead_first")
class DeadFirstPolicy(LRUTailPolicy):
    """Evict dead blocks (no future use) first, then LRU with deepest-first ties."""

    offline = True

    def __init__(self, capacity: int, *, oracle: NextUseOracle | None = None,
                 **kwargs: object) -> None:
        if oracle is None:
            raise ValueError("dead_first needs the future: pass oracle=NextUseOracle")
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self.oracle = oracle
        self._live: dict[Key, bool] = {}

    def admit(self, info: BlockInfo, now: float) -> bool:
        """A dead block is not placed into a full tier (nothing behind it is ever used)."""
        return len(self.blocks) < self.capacity or self._alive(info.key, now)

    def _alive(self, key: Key, now: float) -> bool:
        return math.isfinite(self.oracle.next_use(key, now))

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        super()._on_insert(info, now)
        self._live[info.key] = self._alive(info.key, now)

    def _on_access(self, key: Key, now: float) -> None:
        super()._on_access(key, now)
        self._live[key] = self._alive(key, now)

    def _on_remove(self, key: Key) -> None:
        super()._on_remove(key)
        self._live.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return (self._live[key], self._last[key], -self.blocks[key].position)


class GapTable:
    """Reuse statistics per use-count class, fit on every use in ``oracle``.

    Class ``c`` is ``min(uses before this one, classes)``; per class it keeps the sorted gaps
    to the next use (uses never followed by another have none) and the number of uses.
    Memory: one float per use of the trace.
    """

    def __init__(self, oracle: NextUseOracle, classes: int) -> None:
        self.classes = classes
        self.gaps: list[list[float]] = [[] for _ in range(classes + 1)]
        self.uses = [0] * (classes + 1)
        for times in oracle.histories():
            for u, t in enumerate(times):
                c = min(u, classes)
                self.uses[c] += 1
                if u + 1 < len(times):
                    self.gaps[c].append(times[u + 1] - t)
        for gaps in self.gaps:
            gaps.sort()

    def hit_within(self, cls: int, age: float, horizon: float) -> float:
        """P(next use within ``(age, age + horizon]`` | class ``cls``, not used for ``age``)."""
        gaps = self.gaps[cls]
        done = bisect.bisect_right(gaps, age)
        waiting = self.uses[cls] - done
        if waiting <= 0:
            return 0.0
        return (bisect.bisect_right(gaps, age + horizon) - done) / waiting


@dataclass(frozen=True)
class ReuseFitConfig:
    """``reuse_fit``: horizon of "used again", use-count classes, eviction sample and seed."""

    horizon_s: float = 300.0
    classes: int = 6
    sample: int = 64
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.horizon_s > 0:
            raise ValueError(f"ReuseFitConfig.horizon_s must be > 0, got {self.horizon_s}")
        if self.classes < 0 or self.sample < 1:
            raise ValueError("ReuseFitConfig: classes must be >= 0 and sample >= 1")


@register_policy("reuse_fit")
class ReuseFitPolicy(ResidencyPolicy):
    """Evict the sampled block least likely to be used within the horizon (fit offline).

    The victim is the lowest ``(P(hit within horizon | class, age), last use)`` among
    ``sample`` evictable blocks drawn with a seeded RNG (all of them if fewer).
    """

    offline = True
    config_class = ReuseFitConfig

    def __init__(self, capacity: int, *, oracle: NextUseOracle | None = None,
                 config: ReuseFitConfig | None = None, **kwargs: object) -> None:
        if oracle is None:
            raise ValueError("reuse_fit is fit on the trace: pass oracle=NextUseOracle")
        super().__init__(capacity, **kwargs)  # type: ignore[arg-type]
        self.config = config or ReuseFitConfig()
        self.oracle = oracle
        self.table = GapTable(oracle, self.config.classes)
        self._rng = random.Random(self.config.seed)
        self._last: dict[Key, float] = {}
        self._cls: dict[Key, int] = {}
        self._keys: list[Key] = []  # evictable blocks, sampled by index
        self._index: dict[Key, int] = {}

    def score(self, key: Key, now: float) -> tuple[float, float]:
        """``(P(hit within horizon), last use)`` of resident ``key``: the lowest goes first."""
        last = self._last[key]
        p = self.table.hit_within(self._cls[key], now - last, self.config.horizon_s)
        return (p, last)

    def _on_insert(self, info: BlockInfo, now: float) -> None:
        self._note(info.key, now)

    def _on_access(self, key: Key, now: float) -> None:
        self._note(key, now)

    def _note(self, key: Key, now: float) -> None:
        # a block demoted to a lower tier arrives after its last use: age counts from that use
        self._last[key] = min(now, self.oracle.last_use(key, now))
        used = self.oracle.uses_until(key, now)
        self._cls[key] = min(max(used - 1, 0), self.config.classes)

    def _on_remove(self, key: Key) -> None:
        self._last.pop(key, None)
        self._cls.pop(key, None)

    def _priority(self, key: Key, now: float) -> tuple:
        return self.score(key, now)

    def _enqueue(self, key: Key, now: float) -> None:
        if key not in self._index:
            self._index[key] = len(self._keys)
            self._keys.append(key)

    def _dequeue(self, key: Key) -> None:
        i = self._index.pop(key, None)
        if i is None:
            return
        tail = self._keys.pop()
        if tail != key:
            self._keys[i] = tail
            self._index[tail] = i

    def _pop(self, now: float) -> Key | None:
        keys = self._keys
        if not keys:
            return None
        n = len(keys)
        if n <= self.config.sample:
            pool = list(keys)
        else:
            pool = [keys[self._rng.randrange(n)] for _ in range(self.config.sample)]
        victim = min(pool, key=lambda k: self.score(k, now))
        self._dequeue(victim)
        return victim
