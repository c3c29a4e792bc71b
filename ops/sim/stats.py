"""What one simulator run measured, and how it becomes a row of the table and the JSON."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class RunStats:
    """Counters of one replay. Arrays are float64 ``[n_requests]`` in seconds.

    Hits count block references *served* from a tier (under ``prefix`` reuse a resident block
    behind the first missing one is recomputed, so it is no hit).
    """

    tier_names: tuple[str, ...]
    block_refs: int = 0
    hits: dict[str, int] = field(default_factory=dict)
    blocks_recomputed: int = 0
    tokens_recomputed: int = 0
    tokens_total: int = 0
    bytes_loaded: int = 0
    bytes_written: dict[str, int] = field(default_factory=dict)
    evictions: dict[str, int] = field(default_factory=dict)
    ttft: np.ndarray = field(default_factory=lambda: np.zeros(0))
    ttft_queue: np.ndarray | None = None
    gpu_held: np.ndarray | None = None  # share of the GPU tier in flight at each arrival
    wall_s: float = 0.0

    def __post_init__(self) -> None:
        for name in self.tier_names:
            self.hits.setdefault(name, 0)
            self.bytes_written.setdefault(name, 0)
            self.evictions.setdefault(name, 0)

    def hit_ratio(self, tier: str) -> float:
        return self.hits.get(tier, 0) / self.block_refs if self.block_refs else 0.0

    def row(self) -> dict[str, object]:
        """Flat JSON-ready figures (see docs/policy.md for every key)."""
        out: dict[str, object] = {
            "requests": int(self.ttft.size),
            "block_refs": self.block_refs,
            **_latency("ttft", self.ttft),
        }
        if self.ttft_queue is not None:
            out.update(_latency("ttft_queue", self.ttft_queue))
        if self.gpu_held is not None and self.gpu_held.size:
            out["gpu_held_mean"] = round(float(self.gpu_held.mean()), 6)
            out["gpu_held_p90"] = round(float(np.percentile(self.gpu_held, 90)), 6)
        for name in self.tier_names:
            out[f"{name}_hit_ratio"] = round(self.hit_ratio(name), 6)
        out.update({
            "blocks_recomputed": self.blocks_recomputed,
            "tokens_recomputed": self.tokens_recomputed,
            "tokens_recomputed_share": round(self.tokens_recomputed / max(1, self.tokens_total), 6),
            "bytes_loaded": self.bytes_loaded,
            "bytes_written": dict(self.bytes_written),
            "evictions": dict(self.evictions),
            "wall_s": round(self.wall_s, 3),
            "refs_per_s": round(self.block_refs / self.wall_s) if self.wall_s > 0 else None,
        })
        return out


def _latency(prefix: str, values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {f"{prefix}_{k}_s": 0.0 for k in ("mean", "p50", "p90", "p99")}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {
        f"{prefix}_mean_s": float(values.mean()),
        f"{prefix}_p50_s": float(p50),
        f"{prefix}_p90_s": float(p90),
        f"{prefix}_p99_s": float(p99),
    }
