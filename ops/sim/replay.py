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
4. **Update** through the tier chain the daemon runs (``cacheserver/chain.py``): the
   request's resident GPU blocks are leased; every other block is offered to the GPU (a block
   fetched from disk is first promoted into the CPU tier, as the daemon's PROMOTE does). A GPU
   victim, or a computed block the GPU does not keep, is demoted into the CPU tier when that
   tier admits it; a CPU victim into every lower tier that admits it and lacks it; a disk
   victim is dropped (``admit`` may refuse: that is how a policy declines to keep a block in CPU
   memory or to write it to disk). Leases are dropped at the end, or, with ``spec.tpot_s``
   (requests in flight), once the request's last token is out: its prefill ends where one FIFO
   prefill server gets to it, and it decodes ``output_tokens * tpot_s`` more. Until then the
   GPU tier cannot evict those blocks, as an engine's pool cannot evict a running request's.
5. **Signals** (``spec.signals``; docs/policy.md "Client signals"): an agent request's blocks
   are pinned for ``pin_ttl_s`` in every tier that holds them (the engine's PIN); a request
   with a session or a retention signals its blocks (the engine's SIGNAL at its end); a
   ``session_end`` request then ends its session. Without signals none of this happens.

Tiers are inclusive: a block loaded from CPU stays there, and the tier above knows it through
``set_backing``. Capacities are in blocks and are never exceeded.
"""

from __future__ import annotations

import heapq
import itertools
import time
from collections.abc import Callable

from asymcache.cacheserver.chain import ChainEvents, Level, TierChain
from asymcache.cacheserver.policy import create_policy, policy_class
from asymcache.cacheserver.policy.cost import CostModel, fetch_or_recompute
from asymcache.ops.sim.belady import NextUseOracle
from asymcache.ops.sim.blocks import CountStore, SimBlock
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


class Replay(ChainEvents):
    """One run: a trace, a cost model, and the policy and sizes in ``spec``."""

    def __init__(self, trace: Trace, cost: CostModel, spec: RunSpec,
                 oracle: NextUseOracle | None = None) -> None:
        self.trace, self.cost, self.spec = trace, cost, spec
        self.block_tokens = trace.block_tokens
        self.block_bytes = trace.block_tokens * cost.kv_bytes_per_token
        self.names = tuple(t.name for t in spec.tiers)
        self.clock = policy_clock(trace)
        extra = policy_kwargs(spec)
        if spec.ranks_signals:
            extra["signals"] = True
        if spec.offline:
            extra["oracle"] = oracle or build_oracle(trace, self.clock)
        self.levels = [
            Level(t.name, CountStore(t.capacity), create_policy(
                spec.policy, t.capacity, semantics=spec.semantics, cost_model=cost, tier=t.name,
                **extra), demote="next" if i == 0 else "all" if i == 1 else "none")
            for i, t in enumerate(spec.tiers)
        ]
        for level in self.levels:
            level.store.policy = level.policy  # type: ignore[attr-defined]
        self.pols = [level.policy for level in self.levels]
        self.blocks: dict[int, SimBlock] = {}
        self.chain = TierChain(self.levels, self.blocks.get, _drop_pin, self)
        self.load = [0.0] + [cost.load_cost(n, self.block_bytes) for n in self.names[1:]]
        self._rc: list[float] = []
        self.stats = RunStats(self.names)
        # requests in flight (spec.tpot_s): GPU keys they hold, and when each lets go
        self._held: dict[int, int] = {}
        self._ends: list[tuple[float, int, tuple[int, ...]]] = []
        self._seq = itertools.count()
        self._free = float("-inf")  # when the FIFO prefill server is next free
        self._last = float("-inf")  # the policy clock of the last request served

    def run(self, progress: Callable[[int], None] | None = None) -> RunStats:
        """Replay every request; ``progress(n)`` is called every 256 requests."""
        import numpy as np

        service = np.zeros(len(self.trace))
        done = np.zeros(len(self.trace))  # when each prefill ends on the FIFO server
        held = np.zeros(len(self.trace)) if self.spec.tpot_s is not None else None
        capacity = max(1, self.spec.tiers[0].capacity)
        started = time.perf_counter()
        for i, (req, now) in enumerate(zip(self.trace.requests, self.clock, strict=True)):
            if held is not None:
                self._finish_until(now)
                held[i] = len(self._held) / capacity
            service[i] = self.serve(req, now)
            done[i] = self._free
            if progress is not None and i % 256 == 255:
                progress(256)
        self.stats.wall_s = time.perf_counter() - started
        if held is not None:
            self.stats.gpu_held = held
        self.stats.ttft = service
        if self.spec.queue:
            self.stats.ttft_queue = done - np.array([r.arrival_s for r in self.trace])
        return self.stats

    def serve(self, req: Request, now: float) -> float:
        """Price ``req`` and update the tiers; returns its prefill seconds."""
        found = [self._locate(k) for k in req.blocks]
        plan = self._plan(found)
        seconds = self._price(req, plan)
        self._free = max(self._free, req.arrival_s) + seconds
        self._update(req, found, plan, now)
        self._last = now
        return seconds

    def placement(self, key: int) -> tuple[str, ...]:
        """The tiers that hold ``key`` now, highest first."""
        block = self.blocks.get(key)
        return () if block is None else tuple(
            lv.name for lv in self.levels if block.where & lv.bit)

    # ---- planning and pricing -----------------------------------------------------------
    def _locate(self, key: int) -> int:
        block = self.blocks.get(key)
        where = 0 if block is None else block.where
        return (where & -where).bit_length() - 1 if where else RECOMPUTE

    def _plan(self, found: list[int]) -> list[int]:
        if self.spec.semantics == "prefix":
            if RECOMPUTE in found:
                cut = found.index(RECOMPUTE)
                return found[:cut] + [RECOMPUTE] * (len(found) - cut)
            return list(found)
        tiers = [self.names[j] if j >= 0 else None for j in found]
        keep = fetch_or_recompute(tiers, [j >= 0 for j in found], self.cost, self.block_tokens,
                                  self.block_bytes)
        return [j if ok else RECOMPUTE for j, ok in zip(found, keep, strict=True)]

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

    # ---- tier updates (the daemon's chain) ----------------------------------------------
    def _update(self, req: Request, found: list[int], plan: list[int], now: float) -> None:
        gpu, chain = self.levels[0], self.chain
        leased = [k for k, j in zip(req.blocks, found, strict=True) if j == 0]
        for key in leased:
            gpu.policy.protect(key)
        parent = None
        for i, key in enumerate(req.blocks):
            src = found[i]
            if src == 0:
                gpu.policy.access(key, now)
            else:
                block = self._block(key, parent, i)
                if src > 0:
                    self.levels[src].policy.access(key, now)
                    if block.where & self.levels[src].bit:  # still there (not evicted since)
                        for t in range(1, plan[i]):  # PROMOTE into the CPU tier: no admission
                            chain.place(self.levels[t], block, b"", now, admit=False)
                if block.where & gpu.bit:  # the same block earlier in this request
                    gpu.policy.access(key, now)
                if chain.place(gpu, block, b"", now, admit=True):
                    gpu.policy.protect(key)
                    leased.append(key)
                elif len(self.levels) > 1:  # the GPU keeps no copy: demoted as a GPU victim
                    chain.copy(gpu, self.levels[1], block, now)
            parent = key
        if self.spec.tpot_s is None:
            for key in leased:
                gpu.policy.unprotect(key, now)
        else:
            self._hold(leased, self._free + req.output_tokens * self.spec.tpot_s)
        if self.spec.signals:
            self._signal(req, now)

    def _hold(self, keys: list[int], until: float) -> None:
        """Keep ``keys`` (protected in the GPU tier) leased until ``until``."""
        mine = tuple(dict.fromkeys(keys))
        for key in mine:
            self._held[key] = self._held.get(key, 0) + 1
        heapq.heappush(self._ends, (until, next(self._seq), mine))

    def _finish_until(self, now: float) -> None:
        """Release the leases of every request whose last token is out by ``now``; the policy
        sees each release at its time, kept no earlier than the last request it saw."""
        gpu, held = self.levels[0].policy, self._held
        while self._ends and self._ends[0][0] <= now:
            until, _, keys = heapq.heappop(self._ends)
            at = max(until, self._last)
            for key in keys:
                left = held[key] - 1
                if left:
                    held[key] = left
                else:
                    del held[key]
                    gpu.unprotect(key, at)

    def _signal(self, req: Request, now: float) -> None:
        """What the client said with ``req``: pin, session and retention, session end."""
        chain = self.chain
        session = req.session if req.session >= 0 else None
        retain_until = now + req.retention_s if req.retention_s > 0 else 0.0
        for key in req.blocks:
            block = self.blocks.get(key)
            if block is None or not block.where:
                continue
            if req.pin_ttl_s > 0:
                chain.pin(block, now + req.pin_ttl_s, now)
            if session is not None or retain_until > 0:
                chain.signal(block, session, retain_until, now)
        if req.session_end and session is not None:
            chain.end_session(session, now)

    def _block(self, key: int, parent: int | None, index: int) -> SimBlock:
        block = self.blocks.get(key)
        if block is None:
            block = SimBlock(key, parent, index, self.block_tokens, self.block_bytes)
            self.blocks[key] = block
        return block

    # ---- chain events -------------------------------------------------------------------
    def evicted(self, level: Level, block: object) -> None:
        self.stats.evictions[level.name] += 1

    def entered(self, level: Level, block: object) -> None:
        if level is not self.levels[0]:
            self.stats.bytes_written[level.name] += self.block_bytes


def _drop_pin(block: SimBlock) -> None:
    """A block no tier holds is forgotten, with its pin and signals (as the daemon drops its
    record)."""
    if not block.where and not block.busy:
        block.pinned, block.pin_until = False, None
        block.session, block.shared, block.retain_until = None, False, 0.0


def policy_kwargs(spec: RunSpec) -> dict[str, object]:
    """``config=`` built from the spec's options for policies that declare a ``config_class``."""
    if not spec.options:
        return {}
    config_class = getattr(policy_class(spec.policy), "config_class", None)
    if config_class is None:
        raise ValueError(f"policy {spec.policy!r} takes no options (got {spec.label!r})")
    return {"config": apply_options(config_class(), dict(spec.options))}
