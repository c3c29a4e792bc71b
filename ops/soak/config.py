"""The soak's configuration and its fault schedule.

Times: the run lasts ``minutes``; faults are spread over ``[FAULTS_FROM, FAULTS_UNTIL]`` of it
(one cycle of every kind per ten minutes, at least one), so that the last daemon lifetime, from
the last restart to the end, is long enough to measure memory after its warm-up. A fault that
runs late pushes the next one back; the run ends at ``duration_s`` or, if faults ran over,
``settle_s`` after the last one, never after :attr:`SoakConfig.hard_limit_s`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Every fault kind, in the order of one cycle (the three daemon restarts come last so that the
# last daemon lifetime starts well before the end).
FAULT_KINDS = ("cpu_tamper", "disk_corrupt_value", "engine_kill", "redis_node_kill",
               "disk_full", "daemon_kill", "disk_damaged_file", "daemon_restart_mid_fetch")
NEEDS_REDIS = ("redis_node_kill",)
FAULTS_FROM, FAULTS_UNTIL = 0.12, 0.6  # shares of the run
MAX_MINUTES = 60.0
MIN_GAP_S = 3.0  # at most, between the end of one fault and the start of the next


@dataclass(frozen=True)
class Limits:
    """What "recovered" means: the daemon answers within ``daemon_serving_s`` of a restart
    (issue 18: 10 s), every engine uses it again within ``engines_back_s`` of that (5 s); a
    killed engine serves again within ``engine_restart_s``; a restarted Redis node gets
    writes again within ``redis_back_s``; a data fault is detected within ``detect_s``."""

    daemon_serving_s: float = 10.0
    engines_back_s: float = 5.0
    engine_restart_s: float = 90.0
    redis_back_s: float = 30.0
    detect_s: float = 10.0
    growth_pct: float = 5.0  # daemon RSS, fds and threads after warm-up


@dataclass(frozen=True)
class SoakConfig:
    """One soak run. Sizes are the daemon's flags (``asymcache serve``) and the engines'."""

    minutes: float = 10.0
    engines: int = 4
    clients: int = 8  # concurrent requests of the steady load (half per tenant)
    max_tokens: int = 12
    seed: int = 0
    faults: tuple[str, ...] = FAULT_KINDS
    hold_s: float = 4.0  # how long a held fault (full disk, dead Redis node) lasts
    num_gpu_blocks: int = 48  # per engine: a few prompts, so that repeats are fetched
    cpu_bytes: str = "4MiB"
    disk_bytes: str = "16MiB"
    disk_map_bytes: int = 64 << 20
    remote_bytes: str = "32MiB"
    lease_timeout_s: float = 10.0
    events_replay_bytes: str = "2MiB"  # bounded like the tiers: full within the warm-up
    progress_s: float = 0.0  # 0: from the duration
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 < self.minutes <= MAX_MINUTES:
            raise ValueError(f"minutes: must be in (0, {MAX_MINUTES:g}], got {self.minutes}")
        for name in ("engines", "clients", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        unknown = sorted(set(self.faults) - set(FAULT_KINDS))
        if unknown:
            raise ValueError(f"faults: unknown kinds {unknown}; known: {list(FAULT_KINDS)}")

    # ---- derived values -------------------------------------------------------------------
    @property
    def duration_s(self) -> float:
        return self.minutes * 60.0

    @property
    def hard_limit_s(self) -> float:
        """The load stops by then whatever the faults do."""
        return self.duration_s * 1.5 + 180.0

    @property
    def settle_s(self) -> float:
        return min(30.0, max(8.0, self.duration_s * 0.05))

    @property
    def warmup_s(self) -> float:
        """Of each daemon lifetime, before memory figures count."""
        return min(60.0, max(8.0, self.duration_s * 0.1))

    @property
    def max_requests(self) -> int:
        """A bound on the count as well as the time (far above what 2 cores serve)."""
        return int(self.duration_s * 50) + 1000

    @property
    def progress_every_s(self) -> float:
        return self.progress_s or min(30.0, max(5.0, self.duration_s / 20))

    @property
    def cycles(self) -> int:
        return max(1, round(self.minutes / 10))

    def schedule(self, kinds: tuple[str, ...]) -> list[tuple[float, str]]:
        """``(seconds after the load starts, kind)`` of every fault to inject."""
        order = [k for _ in range(self.cycles) for k in FAULT_KINDS if k in kinds]
        if not order:
            return []
        start, end = FAULTS_FROM * self.duration_s, FAULTS_UNTIL * self.duration_s
        gap = (end - start) / max(1, len(order) - 1)
        return [(start + i * gap, kind) for i, kind in enumerate(order)]
