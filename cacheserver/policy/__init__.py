"""Residency policies: pure objects shared by the daemon, the engine planner and the simulator.

Importing this package registers every built-in policy, so ``create_policy(name, ...)`` works.
"""

from __future__ import annotations

from cacheserver.policy import lru as _lru  # noqa: F401 - registers lru, lru_tail
from cacheserver.policy.base import (
    REUSE_SEMANTICS,
    BlockInfo,
    HeapOrder,
    Key,
    ResidencyPolicy,
    Reuse,
    create_policy,
    policy_names,
    register_policy,
)

__all__ = [
    "REUSE_SEMANTICS",
    "BlockInfo",
    "HeapOrder",
    "Key",
    "ResidencyPolicy",
    "Reuse",
    "create_policy",
    "policy_names",
    "register_policy",
]
