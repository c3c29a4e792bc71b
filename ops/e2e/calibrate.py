"""Load calibration: the arrival rate at which configuration 1 (no cache) keeps the engine
about ``target`` busy, and this machine's cost profile that every engine shares.

Rate: a sample of the workload (every k-th request, so that its prompt and output lengths are
those of the whole run) is replayed under configuration 1 all at once; busy seconds per request
give a first rate ``target / demand``. Batching makes requests cheaper when they overlap, so
that first guess is checked by replaying the sample open-loop at that rate and corrected by
``target / measured busy share``, up to ``rounds`` times or until within ``tolerance``. The
headline run reports the busy share it really had.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ops.e2e.configs import CONFIGS
from ops.e2e.runner import RunSetup, run_config
from ops.e2e.workload import Workload

BURST_RATE = 1e6  # requests per second: the whole sample is due at once


@dataclass(frozen=True)
class Calibration:
    """The chosen rate, the demand it came from and each ``(rate, busy share)`` tried."""

    rate: float
    demand_s: float
    tried: tuple[tuple[float, float], ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, object]:
        return {"rate_per_s": self.rate, "demand_s_per_request": self.demand_s,
                "tried": [{"rate_per_s": r, "busy_share": b} for r, b in self.tried]}


def calibrate(workload: Workload, setup: RunSetup, *, target: float = 0.6, sample: int = 40,
              rounds: int = 2, tolerance: float = 0.07,
              log: Callable[[str], None] = print) -> Calibration:
    """Find the rate for ``target`` busy (see the module doc); runs configuration 1 only."""
    if not 0 < target < 1:
        raise ValueError(f"target busy share must be in (0, 1), got {target}")
    part = workload.spread_sample(sample)
    burst = run_config(CONFIGS[0], part.at_rate(BURST_RATE), setup).replay
    demand = burst.busy_s / len(part)
    rate = target / demand
    log(f"  calibration: {len(part)} requests back to back, {demand * 1e3:.1f} ms of engine "
        f"time each -> {rate:.2f} requests/s")
    tried: list[tuple[float, float]] = []
    for _ in range(rounds):
        busy = run_config(CONFIGS[0], part.at_rate(rate), setup).replay.busy_share
        tried.append((rate, busy))
        log(f"  calibration: at {rate:.2f} requests/s the engine is {busy:.0%} busy")
        if abs(busy - target) <= tolerance:
            break
        rate *= target / max(busy, 0.05)
    return Calibration(rate, demand, tuple(tried))


def measure_profile(out: Path, quick: bool, model: str = "builtin") -> Path:
    """Measure this machine for the cost model (``asymcache profile``) into ``out``."""
    from ops.commands import profile

    args = argparse.Namespace(model=model, out=str(out), device="cpu", dtype=None,
                              block_size=16, disk_dir=None, quick=quick)
    if profile.run(args) != 0:
        raise RuntimeError("asymcache profile failed")
    return out
