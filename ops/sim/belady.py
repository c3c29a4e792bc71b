"""Belady's MIN for the simulator: the policy and its next-use oracle live in
``asymcache.cacheserver.policy.belady`` (the benchmark's ``belady-bound`` daemon runs it too);
importing this module registers ``belady`` as the simulator always has."""

from __future__ import annotations

from asymcache.cacheserver.policy.belady import BeladyPolicy, DueTimeOracle, NextUseOracle

__all__ = ["BeladyPolicy", "DueTimeOracle", "NextUseOracle"]
