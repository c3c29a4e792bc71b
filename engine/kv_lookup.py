"""Where a request's blocks are, and what to do with each (DESIGN.md §6, admission steps 1-4).

Hash the context's full blocks into keys, look them up (this engine's pool first, then the
daemon: LOOKUP, asking the remote tier only when a load from it could pay, and not sent when the
engine's mirror of the host says nothing can be found; CPU copies this engine made of any of
these blocks are confirmed first), plan segments,
PROMOTE the chosen disk and remote blocks to CPU slots, map the CPU-tier bytes to fetch, and
plan again with what is really available (a block whose bytes could not be had is recomputed).
Slots and copies are the caller's (:class:`asymcache.engine.kv_manager.KVManager`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from asymcache.cacheserver.blocks import ROOT_PARENT, block_key
from asymcache.engine.block_manager import BlockManager
from asymcache.engine.planner import (
    FETCH_TIERS,
    GONE,
    MISS,
    Location,
    PlanInputs,
    plan_blocks,
    remote_may_pay,
    with_remote_load,
)
from asymcache.engine.request import Action, Request
from asymcache.engine.transfers import Transfers

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.engine.cache_link import CacheLink
    from asymcache.engine.cpu_slots import Buffer


class KVLookup:
    """Finds a request's blocks in ``blocks`` (the own pool) and through ``link`` (the daemon,
    may be None) and plans them with ``inputs`` and ``cost``. It takes no pool slots; the
    leases the daemon grants (LOOKUP hits, PROMOTE's CPU slots) go into ``req.leased`` for the
    caller to release."""

    def __init__(self, blocks: BlockManager, link: CacheLink | None, transfers: Transfers,
                 inputs: PlanInputs, cost: CostModel | None) -> None:
        self.blocks, self.link, self.transfers = blocks, link, transfers
        self.inputs, self.cost = inputs, cost
        self.caching = inputs.reuse != "none"

    def extend_keys(self, req: Request) -> None:
        """Append to ``req.keys`` the key of every full block of ``req.tokens`` not keyed yet
        (a chain of blake2b digests from ``req.namespace``); nothing when not caching."""
        bs = self.inputs.block_size
        if not self.caching or len(req.keys) >= req.num_tokens // bs:
            return
        tokens = req.tokens
        while len(req.keys) < len(tokens) // bs:
            i = len(req.keys)
            parent = req.keys[-1] if req.keys else ROOT_PARENT
            req.keys.append(block_key(req.namespace, parent, tokens[i * bs:(i + 1) * bs]))

    def plan(self, req: Request) -> tuple[list[Action], dict[int, Buffer]]:
        """One action per full block of ``req`` and the host bytes of the blocks it fetches,
        by block index (every ``a.fetched`` action has its buffer). Side effects: LOOKUP and
        PROMOTE at the daemon, whose leases land in ``req.leased``."""
        cost = self._plan_cost()
        found = self._lookup(req, cost)
        actions = plan_blocks(found, req.num_tokens, self.inputs, cost)
        found = self._promote(req, found, actions)
        views = self.transfers.views(found, actions, req.keys)
        found = [GONE if f.where in FETCH_TIERS and i not in views else f
                 for i, f in enumerate(found)]
        return plan_blocks(found, req.num_tokens, self.inputs, cost), views

    def _plan_cost(self) -> CostModel | None:
        """The cost model, priced for the remote tier with the daemon's figures if needed."""
        return with_remote_load(self.cost, self.link.remote_load if self.link else None)

    def _lookup(self, req: Request, cost: CostModel | None) -> list[Location]:
        if not self.caching:
            return [MISS] * (req.num_tokens // self.inputs.block_size)
        local = [self.blocks.lookup(k) for k in req.keys]
        found = [MISS if s is None else Location("gpu", s) for s in local]
        if self.link is None:
            return found
        self.transfers.confirm_if_any(req.keys)
        daemon = self.link.lookup(
            req.keys, remote=remote_may_pay(req.num_tokens, self.inputs, cost),
            namespace=req.namespace, in_pool=any(s is not None for s in local))
        req.leased = {k: None for k, loc in zip(req.keys, daemon, strict=True)
                      if loc.where not in ("miss", "remote")}  # REMOTE answers lease nothing
        # Own slots are the truth for "gpu"; a daemon's stale "gpu" answer counts as a miss.
        return [f if f.where == "gpu" or r.where == "gpu" else r
                for f, r in zip(found, daemon, strict=True)]

    def _promote(self, req: Request, found: list[Location], actions: list[Action]
                 ) -> list[Location]:
        """PROMOTE the disk and remote blocks to fetch into CPU slots (leased there)."""
        lower = [i for i, a in enumerate(actions) if a in (Action.FETCH_DISK, Action.FETCH_REMOTE)]
        if not lower or self.link is None:
            return found
        slots = self.link.promote([req.keys[i] for i in lower])
        found = list(found)
        for i, slot in zip(lower, slots, strict=True):
            found[i] = Location("cpu", slot) if slot >= 0 else GONE
            if slot >= 0:
                req.leased[req.keys[i]] = None
        return found
