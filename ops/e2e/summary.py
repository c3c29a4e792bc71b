"""From a configuration's replay to one JSON row, and the lossless check across configurations.

Every configuration's greedy tokens must equal configuration 1's (no cache) request by request
(DESIGN.md section 6: the built-in model's top-1 margins are far above float noise, so any
difference is a bug). :func:`compare_outputs` finds the requests that differ and where;
:func:`check_outputs` raises :class:`OutputMismatch` naming them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from asymcache.ops.e2e.driver import Outcome, Replay
from asymcache.ops.e2e.rpc_timer import round_trips
from asymcache.ops.e2e.runner import ConfigRun

SOURCES = ("resident", "fetched", "recomputed", "new")
PROMOTIONS = "asymcache_tier_promotions_total"


@dataclass(frozen=True)
class Mismatch:
    """A request whose tokens differ from the reference: first differing position and tokens
    (``None`` past the end of the shorter list)."""

    config: str
    request_id: str
    position: int
    expected: int | None
    got: int | None


class OutputMismatch(AssertionError):
    """Some configuration's greedy outputs differ from the no-cache run's."""

    def __init__(self, mismatches: Sequence[Mismatch]) -> None:
        self.mismatches = list(mismatches)
        shown = "\n".join(f"  {m.config}: {m.request_id} differs at output token {m.position} "
                          f"(no cache: {m.expected}, got: {m.got})" for m in self.mismatches[:10])
        more = len(self.mismatches) - 10
        super().__init__(f"OUTPUTS DIFFER FROM THE NO-CACHE RUN in {len(self.mismatches)} "
                         f"request(s) — a lossless cache must never change greedy tokens:\n"
                         f"{shown}" + (f"\n  ... and {more} more" if more > 0 else ""))


def compare_outputs(config: str, reference: Mapping[str, Sequence[int]],
                    outcomes: Sequence[Outcome]) -> list[Mismatch]:
    """Every request of ``outcomes`` whose tokens are not exactly ``reference[request_id]``
    (a request missing from ``reference`` is a mismatch at position 0)."""
    out = []
    for o in outcomes:
        want = reference.get(o.request_id)
        if want is None:
            out.append(Mismatch(config, o.request_id, 0, None, o.token_ids[0] if o.token_ids
                                else None))
            continue
        if list(want) == list(o.token_ids):
            continue
        pos = next((i for i, (a, b) in enumerate(zip(want, o.token_ids, strict=False)) if a != b),
                   min(len(want), len(o.token_ids)))
        out.append(Mismatch(config, o.request_id, pos, _at(want, pos), _at(o.token_ids, pos)))
    return out


def check_outputs(rows: Sequence[Mapping[str, object]],
                  mismatches: Sequence[Mismatch]) -> None:
    """Raise :class:`OutputMismatch` if any row is not identical to the no-cache run."""
    flagged = [r for r in rows if r.get("outputs_identical") is not True]
    if mismatches or flagged:
        raise OutputMismatch(mismatches or [Mismatch(str(r.get("config")), "?", 0, None, None)
                                            for r in flagged])


def _at(tokens: Sequence[int], i: int) -> int | None:
    return tokens[i] if i < len(tokens) else None


def summarize(run: ConfigRun, mismatches: Sequence[Mismatch], block_size: int,
              sessions: Mapping[str, int] | None = None) -> dict[str, object]:
    """The JSON row of one configuration's run (every key is documented in docs/benchmarks.md);
    ``sessions`` (request id -> session) adds the sessions' job latency."""
    cfg, rep = run.config, run.replay
    row: dict[str, object] = {
        "config": cfg.name, "config_id": cfg.key, "stands_for": cfg.stands_for,
        "reuse": cfg.engine.get("reuse"), "policy": run.policy or cfg.policy or "engine-local lru",
        "chunking": cfg.chunking_label, "requests": len(rep.outcomes),
    }
    row.update(latencies(rep.outcomes))
    row.update(job_latencies(rep.outcomes, sessions or {}))
    row.update(_throughput(rep))
    row.update(_sources(rep.outcomes, run.daemon_counters, block_size))
    row.update(_breakdown(rep))
    row["outputs_identical"] = not mismatches
    row["mismatched_requests"] = len(mismatches)
    margins = [o.min_margin for o in rep.outcomes if o.min_margin is not None]
    if margins:
        row["min_top1_margin"] = float(min(margins))
    if run.rpc is not None:
        row["daemon_rpc_s"] = sum(v["seconds"] for v in run.rpc.values())
        row["daemon_rpc"] = run.rpc
        # round trips the engine's step loop waited for (one-way sends not counted)
        row["rpc_per_request"] = round_trips(run.rpc) / len(rep.outcomes)
        row["daemon_share_of_busy"] = row["daemon_rpc_s"] / rep.busy_s if rep.busy_s else 0.0
    if run.daemon_stats is not None:
        tiers = run.daemon_stats.get("tiers", {})
        row["daemon_tiers"] = {t: {k: v.get(k) for k in ("capacity_blocks", "blocks", "hits",
                                                         "evictions", "demotions")}
                               for t, v in tiers.items()}
    return row


def latencies(outcomes: Sequence[Outcome]) -> dict[str, float]:
    """TTFT mean/p50/p90/p99, per-request TPOT mean/p99, and the p99 gap between tokens."""
    ttft = np.array([o.ttft for o in outcomes])
    tpot = np.array([t for o in outcomes if (t := o.tpot) is not None] or [0.0])
    gaps = np.concatenate([np.diff(o.token_times) for o in outcomes] + [np.zeros(1)])
    p50, p90, p99 = np.percentile(ttft, [50, 90, 99])
    return {"ttft_mean_s": float(ttft.mean()), "ttft_p50_s": float(p50),
            "ttft_p90_s": float(p90), "ttft_p99_s": float(p99),
            "tpot_mean_s": float(tpot.mean()), "tpot_p99_s": float(np.percentile(tpot, 99)),
            "itl_p99_s": float(np.percentile(gaps, 99))}


def job_latencies(outcomes: Sequence[Outcome], sessions: Mapping[str, int]
                  ) -> dict[str, float | None]:
    """Per session, its last token − its first request's due time: mean and p90 (None without
    sessions)."""
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for o in outcomes:
        s = sessions.get(o.request_id, -1)
        if s >= 0:
            first[s] = min(first.get(s, o.due), o.due)
            last[s] = max(last.get(s, o.token_times[-1]), o.token_times[-1])
    if not first:
        return {"job_latency_mean_s": None, "job_latency_p90_s": None}
    jobs = np.array([last[s] - first[s] for s in first])
    return {"job_latency_mean_s": float(jobs.mean()),
            "job_latency_p90_s": float(np.percentile(jobs, 90))}


def _throughput(rep: Replay) -> dict[str, float]:
    tokens = sum(len(o.token_ids) for o in rep.outcomes)
    wall = max(rep.wall_s, 1e-9)
    return {"wall_s": rep.wall_s, "output_tok_s": tokens / wall,
            "requests_per_s": len(rep.outcomes) / wall, "engine_busy_s": rep.busy_s,
            "engine_busy_share": rep.busy_share}


def _sources(outcomes: Sequence[Outcome], counters: Mapping[str, float] | None,
             block_size: int) -> dict[str, object]:
    """Prompt tokens by source and the hit share of each tier. The engine counts fetched
    tokens without their tier; the disk's share is the daemon's promotions (disk blocks the
    engine asked for, brought to the CPU tier to be fetched from there)."""
    totals = {s: sum(o.sources[s] for o in outcomes) for s in SOURCES}
    prompt = max(1, sum(totals.values()))
    disk = min(totals["fetched"], int((counters or {}).get(PROMOTIONS, 0)) * block_size)
    out: dict[str, object] = {"tokens_resident": totals["resident"],
                              "tokens_fetched_cpu": totals["fetched"] - disk,
                              "tokens_fetched_disk": disk, "tokens_recomputed":
                              totals["recomputed"], "tokens_new": totals["new"]}
    out["tokens_preempted_recompute"] = sum(o.sources["preempted_recompute"] for o in outcomes)
    out["hit_gpu"] = totals["resident"] / prompt
    out["hit_cpu"] = (totals["fetched"] - disk) / prompt
    out["hit_disk"] = disk / prompt
    for what in ("fetched", "demoted", "offloaded"):
        out[f"bytes_{what}"] = sum(o.moved[what] for o in outcomes)
    prefix = "asymcache_tier_moved_bytes_total{direction="
    out["daemon_moved_bytes"] = {k[len(prefix):-1]: int(v) for k, v in (counters or {}).items()
                                 if k.startswith(prefix)}
    return out


def _breakdown(rep: Replay) -> dict[str, object]:
    """Where TTFT and engine time go: lag, queue and prefill means; prefill and decode steps;
    the share of the GPU pool running requests held (mean and p90 over steps); step time by
    phase."""
    o = rep.outcomes
    prefill_steps = [s for d, p, s in rep.steps if p]
    decode_steps = [s for d, p, s in rep.steps if d and not p]
    return {
        "ttft_lag_mean_s": float(np.mean([x.added - x.due for x in o])),
        "ttft_queue_mean_s": float(np.mean([x.first_scheduled - x.added for x in o])),
        "ttft_prefill_mean_s": float(np.mean([x.token_times[0] - x.first_scheduled for x in o])),
        "prefill_steps": len(prefill_steps), "prefill_steps_s": float(sum(prefill_steps)),
        "prefill_tokens_computed": int(sum(p for _, p, _ in rep.steps)),
        "decode_only_steps": len(decode_steps), "decode_only_steps_s": float(sum(decode_steps)),
        "overdue_steps": rep.overdue_steps,
        "pool_held_mean": float(np.mean(rep.held)) if rep.held else 0.0,
        "pool_held_p90": float(np.percentile(rep.held, 90)) if rep.held else 0.0,
        **phase_shares(rep.phase_s),
    }


def phase_shares(phase_s: dict[str, float]) -> dict[str, object]:
    """The engine's step time by phase (``step_phase_s``) and the shares of the two that
    differ between configurations: the model's (forward, sampling) and admission's (lookups,
    allocation, fetches)."""
    total = sum(phase_s.values())
    return {"step_phase_s": {k: round(v, 4) for k, v in phase_s.items()},
            "model_share_of_steps": phase_s.get("model", 0.0) / total if total else 0.0,
            "admit_share_of_steps": phase_s.get("admit", 0.0) / total if total else 0.0}
