"""Run a grid of simulations — policies × reuse semantics × tier sizes — over one trace.

Each run replays the whole trace through fresh policy objects; runs share the trace and, for
offline policies, one next-use oracle. ``gap_closed`` is added to every row whose baseline
(``lru_tail`` with ``prefix`` reuse) and bound (``belady`` with ``msa`` reuse) ran with the same
tier sizes: ``(TTFT_baseline − TTFT) / (TTFT_baseline − TTFT_bound)`` on mean TTFT without the
queue, ``None`` (n/a) when that gap is under 1% of the baseline.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.sim.belady import NextUseOracle
from asymcache.ops.sim.config import RunSpec, TierSpec, parse_size
from asymcache.ops.sim.replay import Replay, build_oracle, policy_clock
from asymcache.ops.sim.trace import Trace

BASELINE = ("lru_tail", "prefix")
BOUND = ("belady", "msa")
MIN_GAP_SHARE = 0.01


@dataclass(frozen=True)
class Setup:
    """Tier sizes as asked (fraction, blocks or bytes); empty CPU/disk means no such tier."""

    gpu: str
    cpu: str = ""
    disk: str = ""

    def tiers(self, trace: Trace, cost: CostModel) -> tuple[TierSpec, ...]:
        unique, block_bytes = trace.unique_blocks, trace.block_tokens * cost.kv_bytes_per_token
        out = [TierSpec("gpu", parse_size(self.gpu, unique, block_bytes), self.gpu)]
        for name, asked in (("cpu", self.cpu), ("disk", self.disk)):
            if asked:
                out.append(TierSpec(name, parse_size(asked, unique, block_bytes), asked))
        return tuple(out)

    @property
    def label(self) -> str:
        return "gpu" + "".join(f"+{n}" for n, a in (("cpu", self.cpu), ("disk", self.disk)) if a)


def run_grid(trace: Trace, cost: CostModel, policies: Sequence[str], semantics: Sequence[str],
             setups: Sequence[Setup], *, queue: bool = False, signals: bool = False,
             tpot_s: float | None = None, on_run: Callable[[dict[str, object]], None] | None = None,
             progress: Callable[[int], None] | None = None) -> list[dict[str, object]]:
    """Every (setup, policy, semantics) run, in that order, as JSON-ready rows."""
    oracle: NextUseOracle | None = None
    rows = []
    for setup in setups:
        tiers = setup.tiers(trace, cost)
        for policy in policies:
            name, options = RunSpec.parse_policy(policy)
            for sem in semantics:
                spec = RunSpec(name, sem, tiers, queue, options, signals, tpot_s)
                if spec.offline and oracle is None:
                    oracle = build_oracle(trace, policy_clock(trace))
                stats = Replay(trace, cost, spec, oracle).run(progress)
                row = _row(trace, cost, spec, setup, stats.row())
                rows.append(row)
                if on_run is not None:
                    on_run(row)
    add_gap_closed(rows)
    return rows


def _row(trace: Trace, cost: CostModel, spec: RunSpec, setup: Setup,
         figures: dict[str, object]) -> dict[str, object]:
    unique = trace.unique_blocks
    row: dict[str, object] = {
        "trace": trace.name, "cost_model": cost.name, "policy": spec.label,
        "semantics": spec.semantics, "setup": setup.label, "block_tokens": trace.block_tokens,
        "unique_blocks": unique, "signals": spec.signals, "tpot_s": spec.tpot_s,
    }
    for name in ("gpu", "cpu", "disk"):
        blocks = spec.capacity(name)
        row[f"{name}_blocks"] = blocks
        row[f"{name}_frac"] = round(blocks / unique, 6) if unique else 0.0
        row[f"{name}_size"] = getattr(setup, name)
    row.update(figures)
    return row


def add_gap_closed(rows: list[dict[str, object]]) -> None:
    """Set ``gap_closed`` on rows whose baseline and bound ran with the same tier sizes."""
    def key(r: dict[str, object]) -> tuple:
        return (r["trace"], r["cost_model"], r["gpu_blocks"], r["cpu_blocks"], r["disk_blocks"],
                r.get("signals", False))

    ref: dict[tuple, dict[str, float]] = {}
    for r in rows:
        pair = (r["policy"], r["semantics"])
        if pair in (BASELINE, BOUND):
            ref.setdefault(key(r), {})[pair[0]] = float(r["ttft_mean_s"])  # type: ignore[arg-type]
    for r in rows:
        found = ref.get(key(r), {})
        if "lru_tail" not in found or "belady" not in found:
            continue
        base, bound = found["lru_tail"], found["belady"]
        gap = base - bound
        if abs(gap) < MIN_GAP_SHARE * base:
            r["gap_closed"] = None
        else:
            r["gap_closed"] = round((base - float(r["ttft_mean_s"])) / gap, 4)  # type: ignore[arg-type]
