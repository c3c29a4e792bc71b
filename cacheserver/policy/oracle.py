"""``asym_oracle`` (offline, simulator only): ``asym`` told the truth about reuse.

It is ``asym`` with ``P̂`` replaced by what the future holds: 1 if the block is used again
within ``horizon_s`` (default: ever), else ``FLOOR``. It bounds what a better reuse predictor
could add to ``asym``'s ranking, and docs/policy.md uses it to show how much of the gap to
Belady is prediction (which blocks come back) and how much is timing (when they do).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cacheserver.policy.asym import AsymConfig, AsymPolicy
from cacheserver.policy.base import BlockInfo, register_policy
from cacheserver.policy.belady import NextUseOracle
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

    def _raw(self, info: BlockInfo, rec: UseRecord) -> float:
        gap = self.oracle.next_use(info.key, rec.last_s) - rec.last_s
        p = 1.0 if gap <= self.horizon_s else FLOOR
        return p * self._cost(info) / self.size_of(info)
