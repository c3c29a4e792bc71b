"""The preemption schedule of ``asymcache bench preempt``: which host gets its notice when, when
it is taken back and when its replacement serves. A pure function of a seed: every mode of a
round meets the same schedule (each round draws its own, from the seed plus the round).

One host at a time: notice ``k`` goes to slot ``k % 2`` (the slots alternate), ``period_s`` ±
``jitter`` after notice ``k - 1`` (uniform, seeded), but never before the replacement of the
host preempted at ``k - 1`` serves (``replace_s`` after its notice); a draw below that is raised
to it. After a notice the host has ``grace_s``: it drains at once (deadline ``drain_share`` of
the grace), gets SIGTERM at ``term_share`` of the grace and SIGKILL (engine and daemon) at its
end. ``scaled(f)`` multiplies every time figure by ``f`` (``--quick``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

MAX_PREEMPTIONS = 1000


@dataclass(frozen=True)
class Timing:
    """Time figures of the schedule, in seconds (see the module doc)."""

    period_s: float = 60.0
    jitter: float = 0.2
    grace_s: float = 30.0
    replace_s: float = 60.0  # from the notice to the replacement host serving
    drain_share: float = 2 / 3  # the drain's deadline, a share of the grace
    term_share: float = 0.9  # SIGTERM to the engine, a share of the grace

    def __post_init__(self) -> None:
        for name in ("period_s", "grace_s", "replace_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Timing.{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"Timing.jitter must be in [0, 1), got {self.jitter}")
        for name in ("drain_share", "term_share"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"Timing.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.replace_s < self.grace_s:
            raise ValueError(f"Timing.replace_s ({self.replace_s}) must be >= grace_s "
                             f"({self.grace_s}): a replacement comes after the host is gone")

    def scaled(self, factor: float) -> Timing:
        """Every time figure times ``factor`` (shares and jitter unchanged)."""
        if not factor > 0:
            raise ValueError(f"a time factor must be > 0, got {factor}")
        return replace(self, period_s=self.period_s * factor, grace_s=self.grace_s * factor,
                       replace_s=self.replace_s * factor)

    @property
    def drain_deadline_s(self) -> float:
        return self.drain_share * self.grace_s

    @property
    def term_s(self) -> float:
        return self.term_share * self.grace_s


@dataclass(frozen=True)
class Preemption:
    """Notice ``index`` to host slot ``slot`` at ``notice_s`` (seconds from the replay's
    start); the host is gone at ``gone_s`` and its replacement serves from ``up_s``."""

    index: int
    slot: int
    notice_s: float
    gone_s: float
    up_s: float

    def to_dict(self) -> dict[str, float | int]:
        return {"index": self.index, "slot": self.slot, "notice_s": round(self.notice_s, 3),
                "gone_s": round(self.gone_s, 3), "up_s": round(self.up_s, 3)}


def schedule(timing: Timing, count: int, seed: int, slots: int = 2) -> list[Preemption]:
    """``count`` preemptions (see the module doc); the same ``seed`` gives the same list."""
    if not 0 <= count <= MAX_PREEMPTIONS:
        raise ValueError(f"preemptions must be in [0, {MAX_PREEMPTIONS}], got {count}")
    rng = random.Random(seed)
    out: list[Preemption] = []
    t = 0.0
    for k in range(count):
        gap = timing.period_s * rng.uniform(1 - timing.jitter, 1 + timing.jitter)
        t += gap if k == 0 else max(gap, timing.replace_s)
        out.append(Preemption(k, k % slots, t, t + timing.grace_s, t + timing.replace_s))
    return out


def span_s(timing: Timing, preemptions: list[Preemption]) -> float:
    """How long the replay must run to cover the schedule: the last replacement serves, then
    half a period more to show the recovery (one period without preemptions)."""
    if not preemptions:
        return timing.period_s
    return preemptions[-1].up_s + timing.period_s / 2
