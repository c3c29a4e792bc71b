"""Load calibration: the arrival rate at which configuration 1 (no cache) keeps the engine
about ``target`` busy, and this machine's cost profile that every engine shares.

First guess: a sample of the workload (every k-th request, so that its prompt and output lengths
are those of the whole run) is replayed under configuration 1 all at once; busy seconds per
request give the rate ``target / demand``. Batching makes requests cheaper when they overlap and
the machine is shared, so the guess is then checked on the headline run itself
(:func:`calibrated`): configuration 1 replays the whole workload at the rate, and if its busy
share misses ``target`` by more than ``tolerance`` the rate is corrected by
``target / busy share`` and configuration 1 runs again, at most ``rounds`` more times. The run
that is kept is configuration 1's headline row; the busy share it had is reported.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from asymcache.ops.e2e.configs import CONFIGS
from asymcache.ops.e2e.driver import Outcome
from asymcache.ops.e2e.runner import ConfigRun, RunSetup, run_config
from asymcache.ops.e2e.workload import Workload

Progress = Callable[[str, int], Callable[[Outcome], None]]  # (label, requests) -> per-request

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


def first_rate(workload: Workload, setup: RunSetup, target: float, sample: int,
               log: Callable[[str], None] = print) -> tuple[float, float]:
    """``(rate, engine seconds per request)`` from the sample replayed back to back."""
    if not 0 < target < 1:
        raise ValueError(f"target busy share must be in (0, 1), got {target}")
    part = workload.spread_sample(sample)
    burst = run_config(CONFIGS[0], part.at_rate(BURST_RATE), setup).replay
    demand = burst.busy_s / len(part)
    log(f"  calibration: {len(part)} requests back to back, {demand * 1e3:.1f} ms of engine "
        f"time each -> {target / demand:.2f} requests/s")
    return target / demand, demand


def calibrated(workload: Workload, setup: RunSetup, rate: float, *, target: float,
               rounds: int, tolerance: float, progress: Progress,
               log: Callable[[str], None] = print) -> tuple[ConfigRun, list[tuple[float, float]]]:
    """Configuration 1's run at the calibrated rate (see the module doc) and what was tried."""
    tried: list[tuple[float, float]] = []
    for i in range(rounds + 1):
        w = workload.at_rate(rate)
        run = run_config(CONFIGS[0], w, setup, margins=True,
                         on_done=progress(f"{w.name} 1 no-cache @ {rate:.2f}/s", len(w)))
        busy = run.replay.busy_share
        tried.append((rate, busy))
        log(f"  calibration: at {rate:.2f} requests/s configuration 1 keeps the engine "
            f"{busy:.0%} busy")
        if abs(busy - target) <= tolerance or i == rounds:
            return run, tried
        rate *= target / max(busy, 0.05)
    raise AssertionError("unreachable: the last round returns")


def measure_profile(out: Path, quick: bool, model: str = "builtin") -> Path:
    """Measure this machine for the cost model (``asymcache profile``) into ``out``."""
    from asymcache.ops.commands import profile

    args = argparse.Namespace(model=model, out=str(out), device="cpu", dtype=None,
                              block_size=16, disk_dir=None, quick=quick)
    if profile.run(args) != 0:
        raise RuntimeError("asymcache profile failed")
    return out
