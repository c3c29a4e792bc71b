"""Offline oracles for analysis (simulator only): ``asym_oracle`` and ``dead_first``.

* ``asym_oracle`` is ``asym`` with ``P̂`` replaced by what the future holds: 1 if the block is
  used again within ``horizon_s`` (default: ever), else ``FLOOR``. It bounds what a better
  reuse predictor could add to ``asym``'s ranking.
* ``dead_first`` is LRU (``lru_tail`` ties) that knows which blocks are dead — never used
  again — and evicts those first (and does not admit one into a full tier). It needs no cost
  model and no timing: it shows how much of the gap to Belady is knowing *which* blocks come
  back, as opposed to *when* they do.

docs/policy.md uses both, with Belady, to split the gap into prediction and timing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cacheserver.policy.asym import AsymConfig, AsymPolicy
from cacheserver.policy.base import BlockInfo, Key, register_policy
from cacheserver.policy.belady import NextUseOracle
from cacheserver.policy.lru import LRUTailPolicy
from cacheserver.policy.reuse import UseRecord

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
