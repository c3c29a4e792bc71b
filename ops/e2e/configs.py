"""The benchmark's configurations and the capacities every one of them gets.

A :class:`BenchConfig` is data, not code: engine settings (``engine.EngineConfig`` fields:
reuse semantics, tiers fetched from, write-through, chunking) plus the daemon's residency policy,
or no daemon at all. The mapping follows docs/engine.md ("The end-to-end configurations map
to ..."). Baselines chunk like vLLM's chunked prefill (fixed 2048-token steps). Two bounds: P
(a pool that never evicts: how much reuse exists) and B (configuration 4's engine and capacities
with an offline Belady daemon: what a policy can reach at those capacities).

:class:`Capacities` turns the tier fractions of the workload's unique blocks into block counts,
then into engine and daemon settings, the same for every configuration.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BASELINE_CHUNK = 2048


@dataclass(frozen=True)
class BenchConfig:
    """One configuration: a name, what it stands for, engine options and the daemon policy
    (``None``: no daemon; the engine's own pool with local LRU, tail first)."""

    key: str
    name: str
    stands_for: str
    engine: dict = field(default_factory=dict)
    policy: str | None = None
    bound: bool = False  # a bound, not a contender: its pool holds every block (no eviction)
    oracle: bool = False  # its daemon is handed the replayed future (ops/e2e/oracle.py)
    signal_policy: str | None = None  # the daemon policy where client signals are on, if other

    @property
    def uses_daemon(self) -> bool:
        return self.policy is not None

    @property
    def chunking_label(self) -> str:
        if self.engine.get("chunking") == "fixed":
            return f"fixed {self.engine['chunk_tokens']}"
        return "adaptive, per step" if self.engine.get("tpot_window") == 1 else "adaptive"


def _fixed(tokens: int) -> dict:
    return {"chunking": "fixed", "chunk_tokens": tokens}


_ASYM = {"reuse": "msa", "chunking": "adaptive"}
CONFIGS: tuple[BenchConfig, ...] = (
    BenchConfig("1", "no-cache", "no KV reuse at all", {"reuse": "none", **_fixed(2048)}),
    BenchConfig("2", "prefix-gpu", "prefix cache, LRU tail-first, GPU only (vLLM APC)",
                {"reuse": "prefix", "fetch_tiers": (), "write_through": False, **_fixed(2048)}),
    BenchConfig("3", "prefix-offload", "prefix cache + CPU and disk offload, LRU "
                "(LMCache with vLLM)", {"reuse": "prefix", "write_through": True,
                                        **_fixed(2048)}, "lru"),
    BenchConfig("4", "asymcache", "MSA reuse + asym policy + tiers + adaptive chunking",
                dict(_ASYM), "asym"),
    BenchConfig("5a", "msa-lru", "ablation: AsymCache with the LRU policy (lru_signals where "
                "client signals are on)", dict(_ASYM), "lru", signal_policy="lru_signals"),
    BenchConfig("5b", "prefix-asym", "ablation: AsymCache with prefix-only reuse",
                {**_ASYM, "reuse": "prefix"}, "asym"),
    BenchConfig("5c", "asym-fixed2048", "ablation: AsymCache with fixed 2048-token chunks",
                {"reuse": "msa", **_fixed(2048)}, "asym"),
    BenchConfig("5d", "asym-fixed512", "ablation: AsymCache with fixed 512-token chunks",
                {"reuse": "msa", **_fixed(512)}, "asym"),
    BenchConfig("5e", "asym-perstep", "ablation: AsymCache's adaptive chunking with every step "
                "within the objective (tpot_window 1: no pace allowance)",
                {**_ASYM, "tpot_window": 1}, "asym"),
    BenchConfig("P", "perfect-cache", "bound: every block seen before is resident (a pool "
                "that never evicts), only new tokens computed", {"reuse": "msa", "fetch_tiers": (),
                                                                 "write_through": False,
                                                                 **_fixed(2048)}, bound=True),
    BenchConfig("B", "belady-bound", "bound at 4's capacities: AsymCache's engine and tiers, "
                "every daemon tier evicting by offline Belady (the replayed future)",
                dict(_ASYM), "belady", oracle=True),
)
QUICK_KEYS = tuple(c.key for c in CONFIGS)


def select(keys: list[str] | None) -> list[BenchConfig]:
    """Configurations by key or name (all when ``keys`` is empty); 1 always comes first, as
    every other configuration's outputs are checked against it."""
    if not keys:
        return list(CONFIGS)
    known = {c.key: c for c in CONFIGS} | {c.name: c for c in CONFIGS}
    bad = [k for k in keys if k not in known]
    if bad:
        raise ValueError(f"unknown configuration(s) {bad}; known: "
                         f"{[f'{c.key}={c.name}' for c in CONFIGS]}")
    chosen = {known[k].key: known[k] for k in keys}
    return [CONFIGS[0]] + [c for c in CONFIGS[1:] if c.key in chosen]


@dataclass(frozen=True)
class Capacities:
    """Tier sizes in blocks. ``gpu_floor`` is the smallest pool that holds ``min_contexts`` of
    the longest contexts: below it a run could not admit its longest request while another
    runs, so the GPU pool is raised to it (``gpu_raised``, reported). ``all_blocks`` is a pool
    that never has to evict on this workload (every prompt block, every block its outputs fill
    and room for the running requests): the perfect-cache bound's pool."""

    unique_blocks: int
    gpu_blocks: int
    cpu_blocks: int
    disk_blocks: int
    gpu_asked: int
    block_bytes: int
    all_blocks: int = 0

    @classmethod
    def from_fractions(cls, unique: int, gpu: float, cpu: float, disk: float,
                       gpu_floor: int, block_bytes: int, output_blocks: int = 0) -> Capacities:
        for name, frac in (("gpu", gpu), ("cpu", cpu), ("disk", disk)):
            if not 0 <= frac <= 10:
                raise ValueError(f"--{name}-frac must be within [0, 10], got {frac}")
        asked = max(1, round(gpu * unique))
        pool = max(asked, gpu_floor)
        return cls(unique, pool, round(cpu * unique), round(disk * unique), asked, block_bytes,
                   unique + output_blocks + pool)

    @property
    def gpu_raised(self) -> bool:
        return self.gpu_blocks > self.gpu_asked

    def frac(self, tier: str) -> float:
        return getattr(self, f"{tier}_blocks") / self.unique_blocks

    def daemon_flags(self, policy: str, disk_entry_bytes: int) -> dict[str, object]:
        """``asymcache serve`` flags: CPU tier of ``cpu_blocks`` slots of one block each, disk
        tier of ``disk_blocks`` entries (``disk_entry_bytes`` each on LMDB)."""
        return {"cpu_bytes": max(1, self.cpu_blocks) * self.block_bytes,
                "cpu_slot_bytes": self.block_bytes,
                "disk_bytes": self.disk_blocks * disk_entry_bytes,
                "policy": policy, "log_level": "warning"}

    def to_dict(self) -> dict[str, object]:
        return {"unique_blocks": self.unique_blocks, "gpu_blocks": self.gpu_blocks,
                "gpu_blocks_asked": self.gpu_asked, "cpu_blocks": self.cpu_blocks,
                "disk_blocks": self.disk_blocks, "block_bytes": self.block_bytes,
                "all_blocks": self.all_blocks}


def lmdb_entry_bytes(block_bytes: int, page: int = 4096) -> int:
    """Disk-tier footprint of one block: its value (a ~170-byte header and the bytes) in LMDB
    overflow pages, plus the tier's index overhead (``tiers/disk.py``, ``_footprint``)."""
    return -(-(block_bytes + 184) // page) * page + 256
