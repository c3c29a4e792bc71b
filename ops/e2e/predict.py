"""The simulator's prediction for the very workload and capacities of a benchmark run.

The workload's prompts become a simulator trace at the engine's block size
(:meth:`asymcache.ops.e2e.workload.Workload.to_trace`), the tiers get the same block counts as the
run,
and each configuration is replayed by ``asymcache.ops.sim.replay`` with its policy and reuse
semantics
under a cost model: the ``h100-llama3-8b`` preset (what the design targets) and, beside it, this
machine's measured profile (how far the simulator explains the measured run). The simulator
models neither decoding nor chunking, and its TTFT is the prefill time with one FIFO prefill
server (``ttft_queue``). Given each configuration's measured mean TPOT, it holds each
request's GPU blocks while the request would be in flight (``RunSpec.tpot_s``), as the engine's
pool does: so the chunking ablations differ from configuration 4's prediction only through
their own TPOT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.e2e.configs import BenchConfig, Capacities
from asymcache.ops.e2e.workload import Workload
from asymcache.ops.sim.config import RunSpec, TierSpec
from asymcache.ops.sim.replay import Replay

H100 = "h100"  # label of the h100-llama3-8b preset in rows and tables
H100_PRESET = "h100-llama3-8b"
LOCAL = "local"  # label of this machine's measured profile


def sim_spec(cfg: BenchConfig, caps: Capacities, signals: bool = True) -> RunSpec:
    """The simulator's run for ``cfg``: its policy, its reuse and the tiers it uses, replaying
    the clients' signals (TTL pins too) when ``signals``."""
    gpu = TierSpec("gpu", caps.gpu_blocks)
    if cfg.engine.get("reuse") == "none":
        return RunSpec("lru_tail", "prefix", (TierSpec("gpu", 0),), queue=True)
    if cfg.bound:
        return RunSpec("lru_tail", "msa", (TierSpec("gpu", caps.all_blocks),), queue=True)
    if not cfg.uses_daemon:
        return RunSpec("lru_tail", str(cfg.engine["reuse"]), (gpu,), queue=True)
    tiers = (gpu, TierSpec("cpu", caps.cpu_blocks), TierSpec("disk", caps.disk_blocks))
    policy = cfg.signal_policy if signals and cfg.signal_policy else cfg.policy
    return RunSpec(str(policy), str(cfg.engine["reuse"]),
                   tuple(t for t in tiers if t.name == "gpu" or t.capacity > 0), queue=True,
                   signals=signals)


def predict(workload: Workload, caps: Capacities, configs: Sequence[BenchConfig],
            cost_models: Sequence[tuple[str, str]], signals: bool = True,
            tpot_s: Mapping[str, float] | None = None
            ) -> dict[str, dict[str, dict[str, float]]]:
    """``{config key: {cost label: figures}}`` for each ``(label, preset name or profile
    path)``; figures are TTFT mean (with the FIFO queue and without), hit ratios, the share
    of prompt tokens computed and, for a configuration with a TPOT in ``tpot_s``, the share of
    the GPU tier its requests in flight hold."""
    trace = workload.to_trace()
    costs = [(label, CostModel.resolve(name)) for label, name in cost_models]
    cache: dict[tuple, dict[str, float]] = {}
    out: dict[str, dict[str, dict[str, float]]] = {}
    for cfg in configs:
        spec = dataclasses.replace(sim_spec(cfg, caps, signals),
                                   tpot_s=(tpot_s or {}).get(cfg.key))
        out[cfg.key] = {}
        for label, cost in costs:
            key = (spec, label)
            if key not in cache:
                cache[key] = _figures(Replay(trace, cost, spec).run().row())
            out[cfg.key][label] = cache[key]
    return out


def _figures(row: dict[str, object]) -> dict[str, float]:
    keys = ("ttft_queue_mean_s", "ttft_mean_s", "gpu_hit_ratio", "cpu_hit_ratio",
            "disk_hit_ratio", "tokens_recomputed_share", "gpu_held_mean")
    return {k: float(row[k]) for k in keys if k in row}  # type: ignore[arg-type]

