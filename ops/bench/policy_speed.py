"""``asymcache bench policy``: what one use of a block costs each residency policy, in CPU time.

The daemon runs its policies on the request path, on the same cores as the engines, so a
policy's per-use work is taken from prefill (docs/followups.md, issue 16). Two experiments,
each policy in turn, ``--rounds`` times interleaved (the median is printed, and every round):

1. **calls** — one policy, one GPU-like tier of ``--blocks`` blocks, fed chains of blocks as
   the daemon's ``TierChain`` feeds it: ``admit``, ``evict`` until there is room, ``insert``
   (a miss); ``protect`` / ``access`` / ``unprotect`` (a hit under a lease); ``remove``;
   ``resignal``. Microseconds per call.
2. **chain** — the simulator's replay (the same ``TierChain``) of the first ``--requests``
   requests of a generated trace through GPU, CPU and disk tiers of ``--tiers`` blocks: block
   references per second, the figure ``asymcache simulate`` prints.

Pure CPU work: no daemon, no I/O. Deterministic inputs (seeded), so two builds compare.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

NAME = "policy"
HELP = "per-call and per-reference CPU cost of residency policies (asym, lru_signals, ...)"

CHAIN_BLOCKS = 16  # blocks per request chain in the calls experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="lru_tail,lru_signals,asym",
                        help="policies, comma-separated (default lru_tail,lru_signals,asym)")
    parser.add_argument("--blocks", default="512,2048",
                        help="tier sizes of the calls experiment, comma-separated")
    parser.add_argument("--calls", type=int, default=20_000, help="timed calls of each kind")
    parser.add_argument("--trace", default="chat", help="trace of the chain experiment")
    parser.add_argument("--requests", type=int, default=1500,
                        help="requests replayed in the chain experiment (0: skip it)")
    parser.add_argument("--tiers", default="600,1800,6000",
                        help="GPU,CPU,disk blocks of the chain experiment")
    parser.add_argument("--semantics", default="msa", choices=("prefix", "msa"))
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median)")
    parser.add_argument("--out", default=None, help="also write the figures as JSON here")


def run(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    sizes = [int(s) for s in args.blocks.split(",") if s.strip()]
    results: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        for policy in policies:
            for size in sizes:
                for call, us in calls(policy, size, args.calls, args.semantics).items():
                    results.setdefault(f"{policy} {size} {call} us", []).append(us)
            if args.requests > 0:
                refs = chain(policy, args.trace, args.requests, args.tiers, args.semantics)
                results.setdefault(f"{policy} chain refs/s", []).append(refs)
    width = max(len(k) for k in results)
    for label, values in results.items():
        rounds = " ".join(f"{v:.2f}" for v in values)
        print(f"{label:<{width}}  median {statistics.median(values):10.2f}   rounds {rounds}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(results, indent=1) + "\n")
        print(f"wrote {args.out}")
    return 0


def _spec(policy: str, semantics: str, tiers: tuple):  # -> RunSpec
    """``policy`` (``NAME[:key=value;...]``, as ``asymcache simulate`` takes it) over
    ``tiers``, replaying the trace's client signals."""
    from asymcache.ops.sim.config import RunSpec

    name, options = RunSpec.parse_policy(policy)
    return RunSpec(name, semantics, tiers, False, options, True)


def _make(policy: str, capacity: int, semantics: str):  # -> ResidencyPolicy
    from asymcache.cacheserver.policy import create_policy
    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.cacheserver.policy.sessions import SessionBook
    from asymcache.ops.sim.config import TierSpec
    from asymcache.ops.sim.replay import policy_kwargs

    spec = _spec(policy, semantics, (TierSpec("gpu", capacity),))
    made = create_policy(spec.policy, capacity, semantics=semantics, tier="gpu",
                         signals=spec.ranks_signals, cost_model=CostModel.resolve("h100-llama3-8b"),
                         **policy_kwargs(spec))
    made.set_spill_tier("cpu")
    made.set_sessions(SessionBook())
    return made


def calls(policy: str, capacity: int, n: int, semantics: str = "msa") -> dict[str, float]:
    """Microseconds per call of each kind, on a tier kept full by a stream of request chains."""
    from asymcache.cacheserver.policy.base import BlockInfo

    pol, rng = _make(policy, capacity, semantics), random.Random(7)
    clock = iter(range(1, 1 << 62))
    chains: list[list[BlockInfo]] = []

    def miss() -> None:  # a new chain, or the extension of an old one
        if chains and rng.random() < 0.5:
            head = rng.choice(chains)[: rng.randint(1, CHAIN_BLOCKS)]
        else:
            head = []
        start, key = len(head), len(chains) * 64 + (1 << 40)
        blocks = head + [BlockInfo(key + i, key + i - 1 if i else None, i, 128, 1 << 17,
                                   session=len(chains) % 97) for i in range(start, CHAIN_BLOCKS)]
        chains.append(blocks)
        now = next(clock) * 1e-3
        for info in blocks[start:]:
            if pol.admit(info, now):
                while len(pol) >= capacity and pol.evict(now) is not None:
                    pass
                if len(pol) < capacity:
                    pol.insert(info, now)

    while len(pol) < capacity or len(chains) < 4 * capacity // CHAIN_BLOCKS:
        miss()
    resident = list(pol.blocks)
    picks = [rng.choice(resident) for _ in range(n)]

    def hit(key: object) -> None:
        now = next(clock) * 1e-3
        pol.protect(key)
        pol.access(key, now)
        pol.unprotect(key, now)

    def resignal(key: object) -> None:
        pol.resignal(key, next(clock) * 1e-3)

    def remove(key: object) -> None:
        pol.remove(key, next(clock) * 1e-3)

    out = {"hit": _timed(hit, picks), "resignal": _timed(resignal, picks),
           "miss": _timed(lambda _: miss(), range(n // CHAIN_BLOCKS)) / CHAIN_BLOCKS}
    gone = list(dict.fromkeys(k for k in picks if k in pol.blocks))[: n // 4]
    out["remove"] = _timed(remove, gone)
    return out


def _timed(step: Callable[[object], None], items) -> float:
    items = list(items)
    started = time.perf_counter()
    for item in items:
        step(item)
    return (time.perf_counter() - started) * 1e6 / max(1, len(items))


def chain(policy: str, trace_spec: str, requests: int, tiers: str, semantics: str) -> float:
    """Block references per second of the simulator's replay (GPU, CPU and disk tiers)."""
    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.ops.sim.config import TierSpec
    from asymcache.ops.sim.replay import Replay
    from asymcache.ops.sim.trace import Trace, load_trace

    trace = load_trace(trace_spec)
    trace = Trace(trace.name, trace.block_tokens, trace.requests[:requests], trace.description,
                  trace.params)
    sizes = [int(s) for s in tiers.split(",")]
    specs = tuple(TierSpec(name, size) for name, size in zip(("gpu", "cpu", "disk"), sizes,
                                                              strict=False))
    stats = Replay(trace, CostModel.resolve("h100-llama3-8b"),
                   _spec(policy, semantics, specs)).run()
    return stats.block_refs / stats.wall_s
