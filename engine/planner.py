"""Segment planner (DESIGN.md section 6, step 2): what to do with each full block of a context.

Torch-free and I/O-free. Input: where each full block was found (this engine's pool, the CPU
tier, disk, the daemon's remote tier, nowhere). Output: one :class:`~engine.request.Action`
per block and the position ranges left to compute.

Reuse semantics:

* ``none`` — no cache: everything is NEW.
* ``prefix`` — what vLLM/SGLang/LMCache do: the longest run of found blocks from position 0 is
  reused (fetching whatever is not resident); everything after the first miss is computed.
* ``msa`` — every found block may be reused; each hole is recomputed. A block found in the CPU
  tier, on disk or in the remote tier is fetched only when loading it is cheaper than
  recomputing it *at its position* (cost model), counting the extra segment a recompute between
  reused neighbours adds.

Counting: computed blocks after the last block found anywhere are NEW, computed blocks before it
are RECOMPUTE. The last position of the context must be computed (its logits are sampled), so a
block holding it is never reused (vLLM does the same).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Literal

from asymcache.cacheserver.policy.cost import CostModel, TierLink, fetch_or_recompute
from asymcache.engine.request import Action

Reuse = Literal["none", "prefix", "msa"]
REUSE_MODES: tuple[str, ...] = ("none", "prefix", "msa")
Where = Literal["gpu", "cpu", "disk", "remote", "miss", "gone"]
FETCH_TIERS: tuple[str, ...] = ("cpu", "disk", "remote")
_FETCH_ACTIONS = {"gpu": Action.RESIDENT, "cpu": Action.FETCH_CPU, "disk": Action.FETCH_DISK,
                  "remote": Action.FETCH_REMOTE}


@dataclass(frozen=True, slots=True)
class Location:
    """Where one block was found: this engine's ``gpu`` slot, a ``cpu`` tier slot, ``disk`` or
    ``remote`` (``slot`` is ``None``; PROMOTE brings it to a CPU slot), ``miss``, or ``gone``:
    found, but its bytes could not be had (a failed promotion or checksum, the daemon went
    away); it is recomputed."""

    where: Where
    slot: int | None = None


MISS = Location("miss")
GONE = Location("gone")


@dataclass(frozen=True)
class PlanInputs:
    """Everything a plan depends on besides the block locations."""

    reuse: Reuse
    block_size: int
    bytes_per_block: int
    fetch_tiers: tuple[str, ...] = FETCH_TIERS


def plan_blocks(
    found: Sequence[Location], num_tokens: int, inputs: PlanInputs, cost: CostModel | None
) -> list[Action]:
    """One action per full block of a ``num_tokens``-long context (``len(found)`` blocks)."""
    bs = inputs.block_size
    if len(found) != num_tokens // bs:
        raise ValueError(f"{len(found)} locations for {num_tokens // bs} full blocks")
    usable = [_usable(loc, inputs) for loc in found]
    if found and len(found) * bs >= num_tokens:  # the block holding the last token is computed
        usable[-1] = False
    if inputs.reuse == "none":
        return [Action.NEW] * len(found)
    if inputs.reuse == "prefix":
        first_gap = next((i for i, ok in enumerate(usable) if not ok), len(usable))
        usable = [i < first_gap for i in range(len(usable))]
    elif inputs.reuse == "msa":
        usable = _cost_filter(found, usable, inputs, cost)
    else:
        raise ValueError(f"reuse must be one of {REUSE_MODES}, got {inputs.reuse!r}")
    last_found = max((i for i, loc in enumerate(found) if loc.where != "miss"), default=-1)
    return [_action(found[i], ok, i <= last_found) for i, ok in enumerate(usable)]


def todo_ranges(actions: Sequence[Action], num_tokens: int, block_size: int) -> list[list[int]]:
    """Ascending ``[start, end)`` ranges of positions to compute: computed blocks and the
    partial tail, merged where adjacent."""
    ranges: list[list[int]] = []
    for i, act in enumerate(actions):
        if act.computed:
            _append(ranges, i * block_size, (i + 1) * block_size)
    _append(ranges, len(actions) * block_size, num_tokens)
    return ranges


def _usable(loc: Location, inputs: PlanInputs) -> bool:
    return loc.where == "gpu" or loc.where in inputs.fetch_tiers


def _action(loc: Location, reused: bool, before_last_found: bool) -> Action:
    if reused:
        return _FETCH_ACTIONS[loc.where]
    return Action.RECOMPUTE if before_last_found else Action.NEW


def _cost_filter(
    found: Sequence[Location], usable: list[bool], inputs: PlanInputs, cost: CostModel | None
) -> list[bool]:
    """Drop fetches that cost more than recomputing the block at its position."""
    return fetch_or_recompute([loc.where for loc in found], usable, cost, inputs.block_size,
                              inputs.bytes_per_block)


def with_remote_load(cost: CostModel | None, figures: tuple[float, float] | None
                     ) -> CostModel | None:
    """``cost`` with a ``remote`` load link of ``figures`` = ``(latency_s, bandwidth_bps)``
    (what the daemon measured or was configured with) when ``cost`` has none of its own."""
    if cost is None or figures is None or cost.has_tier("remote"):
        return cost
    latency_s, bandwidth_bps = figures
    return replace(cost, load=(*cost.load, TierLink("remote", bandwidth_bps, latency_s)))


def remote_may_pay(num_tokens: int, inputs: PlanInputs, cost: CostModel | None) -> bool:
    """Whether asking the remote tier can change a plan of a ``num_tokens`` context: the tier
    is fetched from, and (``msa``, priced) loading a block from it is not dearer than
    recomputing the deepest block that could be reused."""
    if "remote" not in inputs.fetch_tiers or inputs.reuse == "none":
        return False
    deepest = (num_tokens - 1) // inputs.block_size - 1  # the last token's block is computed
    if deepest < 0:
        return False
    if inputs.reuse != "msa" or cost is None or not cost.has_tier("remote"):
        return True
    return (cost.load_cost("remote", inputs.bytes_per_block)
            <= cost.recompute_cost(deepest * inputs.block_size, inputs.block_size))


def _append(ranges: list[list[int]], start: int, end: int) -> None:
    if end <= start:
        return
    if ranges and ranges[-1][1] == start:
        ranges[-1][1] = end
    else:
        ranges.append([start, end])
