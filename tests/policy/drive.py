"""A minimal single-tier driver for policy tests: the caller's side of the contract."""

from __future__ import annotations

from asymcache.cacheserver.policy import BlockInfo, ResidencyPolicy


def info(key: int, position: int = 0, parent: int | None = None, n_tokens: int = 16,
         n_bytes: int = 1600) -> BlockInfo:
    return BlockInfo(key, parent, position, n_tokens, n_bytes)


def reference(policy: ResidencyPolicy, block: BlockInfo, now: float) -> tuple[bool, list]:
    """Use ``block`` at ``now``: a hit, or admit + make room + insert. Returns (hit, victims)."""
    if block.key in policy:
        policy.access(block.key, now)
        return True, []
    victims: list = []
    if policy.capacity == 0 or not policy.admit(block, now):
        return False, victims
    while len(policy) >= policy.capacity:
        victim = policy.evict(now)
        if victim is None:
            return False, victims
        victims.append(victim)
    policy.insert(block, now)
    return False, victims
