"""Residency policies: pure objects shared by the daemon, the engine planner and the simulator.

Importing this package registers every online policy, so ``create_policy(name, ...)`` works; the
offline ones (oracles that need the future: ``belady``, ``asym_oracle``, ``dead_first``,
``reuse_fit``) are the simulator's and register when ``asymcache.ops.sim`` is imported;
``belady`` (``policy/belady.py``) also runs in a benchmark daemon given an ``oracle_file``.
"""

from __future__ import annotations

from asymcache.cacheserver.policy import asym as _asym  # noqa: F401 - registers asym
from asymcache.cacheserver.policy import gdsf as _gdsf  # noqa: F401 - registers gdsf
from asymcache.cacheserver.policy import lfu as _lfu  # noqa: F401 - registers lfu
from asymcache.cacheserver.policy import lru as _lru  # noqa: F401 - registers lru, lru_tail
from asymcache.cacheserver.policy import pensieve as _pensieve  # noqa: F401 - registers pensieve
from asymcache.cacheserver.policy.base import (
    REUSE_SEMANTICS,
    BlockInfo,
    HeapOrder,
    Key,
    ResidencyPolicy,
    Reuse,
    create_policy,
    policy_class,
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
    "policy_class",
    "policy_names",
    "register_policy",
]
