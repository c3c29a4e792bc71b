"""What one simulator run is: a policy, a reuse semantics and the tier sizes.

Sizes are given as a fraction of the trace's unique blocks (``0.1`` or ``10%``), a block count
(``5000``), or bytes (``64GiB``, ``500GB``; converted with the cost model's KV bytes per token).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from asymcache.cacheserver.policy import REUSE_SEMANTICS, policy_class, policy_names

TIER_NAMES = ("gpu", "cpu", "disk")
_BYTES = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


@dataclass(frozen=True)
class TierSpec:
    """One tier of a run: its name and capacity in blocks, and the size as it was asked for."""

    name: str
    capacity: int
    asked: str = ""

    def __post_init__(self) -> None:
        if self.name not in TIER_NAMES:
            raise ValueError(f"TierSpec.name must be one of {TIER_NAMES}, got {self.name!r}")
        if self.capacity < 0:
            raise ValueError(f"TierSpec.capacity must be >= 0, got {self.capacity}")


@dataclass(frozen=True)
class RunSpec:
    """A policy under a reuse semantics over tiers (GPU first), optionally with a FIFO queue."""

    policy: str
    semantics: str
    tiers: tuple[TierSpec, ...]
    queue: bool = False
    options: tuple[tuple[str, str], ...] = ()  # fields of the policy's config_class
    signals: bool = False  # replay the trace's client signals (sessions, ends, retention, pins)
    # Requests in flight: with a value, a request holds its GPU blocks until its last token,
    # its FIFO prefill's end plus ``output_tokens * tpot_s``; None serves one at a time.
    tpot_s: float | None = None

    def __post_init__(self) -> None:
        if self.tpot_s is not None and not self.tpot_s >= 0:
            raise ValueError(f"RunSpec.tpot_s must be >= 0 or None, got {self.tpot_s}")
        if self.policy not in policy_names():
            raise ValueError(f"RunSpec.policy: unknown {self.policy!r}; known: {policy_names()}")
        if self.semantics not in REUSE_SEMANTICS:
            raise ValueError(f"RunSpec.semantics must be one of {REUSE_SEMANTICS}")
        if not self.tiers or self.tiers[0].name != "gpu":
            raise ValueError("RunSpec.tiers must start with the gpu tier")
        order = [TIER_NAMES.index(t.name) for t in self.tiers]
        if order != sorted(set(order)):
            raise ValueError(f"RunSpec.tiers must be gpu, cpu, disk in order, each once: {order}")

    @property
    def label(self) -> str:
        """The policy name with its options, as ``asym:select=false;clock=inflation``."""
        if not self.options:
            return self.policy
        return self.policy + ":" + ";".join(f"{k}={v}" for k, v in self.options)

    @classmethod
    def parse_policy(cls, text: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        """``"asym:select=false;clock=inflation"`` -> ``("asym", (("select", "false"), ...))``."""
        name, _, rest = text.partition(":")
        options = []
        for item in filter(None, (p.strip() for p in rest.split(";"))):
            key, eq, value = item.partition("=")
            if not eq or not key:
                raise ValueError(f"bad policy option {item!r} in {text!r}: expected key=value")
            options.append((key.strip(), value.strip()))
        return name.strip(), tuple(options)

    @property
    def offline(self) -> bool:
        return policy_class(self.policy).offline

    @property
    def ranks_signals(self) -> bool:
        """The policy is built with ``signals=True``: signals on and a policy that ranks by
        them (``asym``, ``lru_signals``; the other rivals and the oracles do not)."""
        return self.signals and policy_class(self.policy).signal_aware

    def capacity(self, tier: str) -> int:
        return next((t.capacity for t in self.tiers if t.name == tier), 0)


def parse_size(text: str, unique_blocks: int, block_bytes: int) -> int:
    """Blocks for a size given as a fraction, a percentage, a block count or bytes."""
    raw = text.strip().lower()
    if raw.endswith("%"):
        return _fraction(float(raw[:-1]) / 100.0, unique_blocks, text)
    match = re.fullmatch(r"([0-9.]+)\s*([kmgt]i?b|b)", raw)
    if match:
        return int(float(match.group(1)) * _BYTES[match.group(2)] // block_bytes)
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"bad size {text!r}: use 0.1, 10%, 5000 (blocks) or 64GiB") from None
    if "." in raw or value < 1:
        return _fraction(value, unique_blocks, text)
    return int(value)


def _fraction(frac: float, unique_blocks: int, text: str) -> int:
    if not 0 <= frac <= 1:
        raise ValueError(f"bad size {text!r}: a fraction must be within [0, 1]")
    return max(1, round(frac * unique_blocks)) if frac > 0 else 0
