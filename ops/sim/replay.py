"""Replay a trace through a GPU tier and optional CPU and disk tiers run by residency policies.

Per request, in arrival order (the policy clock is the arrival time, nudged by 1 µs where
arrivals tie so that it always moves forward):

1. **Locate** every full block in the highest tier that holds it.
2. **Plan** (``prefix`` reuse): serve blocks up to the first one no tier holds, recompute the
   rest. (``msa`` reuse): serve every held block, recompute only the holes; a block in a lower
   tier is loaded unless recomputing it at its position is cheaper (the engine's choice).
3. **Price** (``CostModel``): one pass, the recomputed blocks at their positions, the partial
   last block (at least one token), loads from lower tiers, and one ``segment_s`` per extra
   run of recomputed tokens. That is the request's prefill time, its TTFT without a queue.
4. **Update**: the request's resident GPU blocks are leased; every other block is offered to
   the GPU (promotion from disk goes through the CPU tier; a block the GPU does not keep is
   offered to the tiers below, as a write-through of its computed bytes). A tier that needs
   room evicts with its policy and demotes the victim to the first lower tier that admits it,
   unless a lower tier still holds a copy (``admit`` may refuse: that is how a policy declines
   to keep a block in CPU memory or to write it to disk). Leases are dropped at the end; an
   agent request's blocks are then pinned for ``pin_ttl_s``.

Tiers are inclusive: a block loaded from CPU stays there, and the tier above knows it through
``set_backing``. Capacities are in blocks and are never exceeded.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from asymcache.cacheserver.policy import BlockInfo, ResidencyPolicy, create_policy, policy_class
from asymcache.cacheserver.policy.belady import NextUseOracle
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.sim.config import RunSpec
from asymcache.ops.sim.formats.options import apply_options
from asymcache.ops.sim.stats import RunStats
from asymcache.ops.sim.trace import Request, Trace

CLOCK_STEP_S = 1e-6
RECOMPUTE = -1


def policy_clock(trace: Trace) -> list[float]:
    """The event time of each request: its arrival, strictly increasing by ``CLOCK_STEP_S``."""
    out, last = [], float("-inf")
    for req in trace.requests:
        last = max(req.arrival_s, last + CLOCK_STEP_S)
        out.append(last)
    return out


def build_oracle(trace: Trace, clock: list[float]) -> NextUseOracle:
    """Every use time of every block, for offline policies (memory: one float per reference)."""
    uses: dict[int, list[float]] = {}
    for req, now in zip(trace.requests, clock, strict=True):
        for key in req.blocks:
            uses.setdefault(key, []).append(now)
    return NextUseOracle(uses)


class Replay:
    """One run: a trace, a cost model, and the policy and sizes in ``spec``."""

    def __init__(self, trace: Trace, cost: CostModel, spec: RunSpec,
                 oracle: NextUseOracle | None = None) -> None:
        self.trace, self.cost, self.spec = trace, cost, spec
        self.block_tokens = trace.block_tokens
        self.block_bytes = trace.block_tokens * cost.kv_bytes_per_token
        self.names = tuple(t.name for t in spec.tiers)
        self.caps = [t.capacity for t in spec.tiers]
        self.clock = policy_clock(trace)
        extra = policy_kwargs(spec)
        if spec.offline:
            extra["oracle"] = oracle or build_oracle(trace, self.clock)
        self.pols: list[ResidencyPolicy] = [
            create_policy(spec.policy, t.capacity, semantics=spec.semantics, cost_model=cost,
                          tier=t.name, **extra)
            for t in spec.tiers
        ]
        for upper, lower in zip(self.pols, self.names[1:], strict=False):
            upper.set_spill_tier(lower)
        self.load = [0.0] + [cost.load_cost(n, self.block_bytes) for n in self.names[1:]]
        self._rc: list[float] = []
        self._infos: dict[int, BlockInfo] = {}
        self.stats = RunStats(self.names)

    def run(self, progress: Callable[[int], None] | None = None) -> RunStats:
        """Replay every request; ``progress(n)`` is called every 256 requests."""
        import numpy as np

        service = np.zeros(len(self.trace))
        started = time.perf_counter()
        for i, (req, now) in enumerate(zip(self.trace.requests, self.clock, strict=True)):
            service[i] = self.serve(req, now)
            if progress is not None and i % 256 == 255:
                progress(256)
        self.stats.wall_s = time.perf_counter() - started
        self.stats.ttft = service
        if self.spec.queue:
            self.stats.ttft_queue = _fifo_ttft([r.arrival_s for r in self.trace], service)
        return self.stats

    def serve(self, req: Request, now: float) -> float:
        """Price ``req`` and update the tiers; returns its prefill seconds."""
        found = [self._locate(k) for k in req.blocks]
        plan = self._plan(found)
        seconds = self._price(req, plan)
        self._update(req, found, plan, now)
        return seconds

    # ---- planning and pricing -----------------------------------------------------------
    def _locate(self, key: int) -> int:
        for j, pol in enumerate(self.pols):
            if key in pol:
                return j
        return RECOMPUTE

    def _plan(self, found: list[int]) -> list[int]:
        if self.spec.semantics == "prefix":
            if RECOMPUTE in found:
                cut = found.index(RECOMPUTE)
                return found[:cut] + [RECOMPUTE] * (len(found) - cut)
            return list(found)
        return [j if j <= 0 or self.load[j] < self._recompute(i) else RECOMPUTE
                for i, j in enumerate(found)]

    def _recompute(self, index: int) -> float:
        rc = self._rc
        while len(rc) <= index:
            rc.append(self.cost.recompute_cost(len(rc) * self.block_tokens, self.block_tokens))
        return rc[index]

    def _price(self, req: Request, plan: list[int]) -> float:
        st, b = self.stats, self.block_tokens
        seconds, runs, in_hole = self.cost.pass_s, 0, False
        for i, j in enumerate(plan):
            if j == RECOMPUTE:
                seconds += self._recompute(i)
                st.blocks_recomputed += 1
                runs += not in_hole
                in_hole = True
                continue
            in_hole = False
            st.hits[self.names[j]] += 1
            if j > 0:
                seconds += self.load[j]
                st.bytes_loaded += self.block_bytes
        tail = max(1, req.input_tokens - len(plan) * b)
        seconds += self.cost.recompute_cost(len(plan) * b, tail)
        runs += not in_hole
        st.block_refs += len(plan)
        st.tokens_total += req.input_tokens
        st.tokens_recomputed += tail + b * plan.count(RECOMPUTE)
        return seconds + self.cost.segment_cost(runs - 1)

    # ---- tier updates -------------------------------------------------------------------
    def _update(self, req: Request, found: list[int], plan: list[int], now: float) -> None:
        gpu = self.pols[0]
        leased = [k for k, j in zip(req.blocks, found, strict=True) if j == 0]
        for key in leased:
            gpu.protect(key)
        parent = None
        for i, key in enumerate(req.blocks):
            src = found[i]
            if src == 0:
                gpu.access(key, now)
            else:
                info = self._info(key, parent, i)
                if src > 0:
                    self.pols[src].access(key, now)
                    for t in range(1, plan[i]):  # promotion passes through the tiers above
                        self._place(t, info, now)
                if self._place(0, info, now):
                    gpu.protect(key)
                    leased.append(key)
                else:  # the GPU keeps no copy: the computed bytes may still go to CPU or disk
                    self._spill(0, key, now)
            parent = key
        for key in leased:
            gpu.unprotect(key, now)
        if req.pin_ttl_s > 0:
            for key in req.blocks:
                if key in gpu:
                    gpu.pin(key, now + req.pin_ttl_s)

    def _place(self, t: int, info: BlockInfo, now: float) -> bool:
        """Insert ``info`` into tier ``t`` if its policy admits it, making room as needed."""
        pol = self.pols[t]
        if info.key in pol:
            pol.access(info.key, now)
            return True
        if self.caps[t] <= 0 or not pol.admit(info, now):
            return False
        while len(pol) >= self.caps[t]:
            victim = pol.evict(now)
            if victim is None:
                return False
            self._demote(t, victim, now)
        pol.insert(info, now)
        if t > 0:
            self.stats.bytes_written[self.names[t]] += self.block_bytes
        self._sync_backing(info.key)
        return True

    def _demote(self, t: int, key: int, now: float) -> None:
        self.stats.evictions[self.names[t]] += 1
        self._spill(t, key, now)

    def _spill(self, t: int, key: int, now: float) -> None:
        """Move a block leaving tier ``t`` down: into the first lower tier that takes it, unless
        a lower tier already holds a copy. A tier that refuses it is skipped, not the block."""
        lower = range(t + 1, len(self.pols))
        if not any(key in self.pols[u] for u in lower):
            for u in lower:
                if self._place(u, self._infos[key], now):
                    break
        self._sync_backing(key)

    def _sync_backing(self, key: int) -> None:
        """Tell every tier holding ``key`` which lower tier still has a copy."""
        below: str | None = None
        for u in range(len(self.pols) - 1, -1, -1):
            if key in self.pols[u]:
                self.pols[u].set_backing(key, below)
                below = self.names[u]

    def _info(self, key: int, parent: int | None, index: int) -> BlockInfo:
        info = self._infos.get(key)
        if info is None:
            info = BlockInfo(key, parent, index, self.block_tokens, self.block_bytes)
            self._infos[key] = info
        return info


def policy_kwargs(spec: RunSpec) -> dict[str, object]:
    """``config=`` built from the spec's options for policies that declare a ``config_class``."""
    if not spec.options:
        return {}
    config_class = getattr(policy_class(spec.policy), "config_class", None)
    if config_class is None:
        raise ValueError(f"policy {spec.policy!r} takes no options (got {spec.label!r})")
    return {"config": apply_options(config_class(), dict(spec.options))}


def _fifo_ttft(arrivals: list[float], service) -> object:
    """TTFT with one FIFO server: waiting for the previous prefills, then its own."""
    import numpy as np

    out = np.empty_like(service)
    free = float("-inf")
    for i, (arrival, s) in enumerate(zip(arrivals, service, strict=True)):
        free = max(free, arrival) + s
        out[i] = free - arrival
    return out
