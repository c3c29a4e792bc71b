"""Prefill chunk sizing: how many prompt tokens each step computes beside its decodes.

Two policies, chosen by name (``create_chunker``):

* ``fixed`` — a step carries at most ``chunk_tokens`` tokens in all: decodes first (one token
  each), prefill takes what is left (vLLM's chunked prefill with ``max_num_batched_tokens``).
* ``adaptive`` — the step-time objective ``target_step_s`` (the TPOT a decode should see) and
  the cost model set the prefill share: the decodes' estimated time is subtracted from the
  target and prefill gets the most tokens whose estimated time fits in the rest. Prefill always
  gets at least ``min_prefill_tokens`` (prefills never starve) and, with no decode running, the
  whole ``max_tokens`` (nothing to protect, so the device never idles).

``fixed`` hands tokens to prefilling requests first come, first served. ``adaptive`` with
decodes running first finishes every prefill whose remaining tokens fit in what is left of the
step (in service order), then gives the rest first come, first served: a short prefill never
waits steps for a long one ahead of it (as shortest-remaining-first, for mean TTFT), while the
oldest prefill still advances by at least ``min_prefill_tokens`` each step (no starvation).
Neither exceeds ``max_tokens`` per step.

The objective is each decode's pace, not every step's length: a decode should get a token every
``target_step_s``, and may fall at most ``tpot_window - 1`` of them behind that pace. Each
decode keeps that allowance as a bank: it starts full (``(tpot_window - 1) × target_step_s``),
every gap between its tokens adds ``target_step_s`` minus the gap (never past full), and a
step may take ``target_step_s`` plus the smallest bank of the decodes beside it. So a prefill
beside decodes that keep pace runs in one long step where it fits instead of crawling through
many short ones that each cost a pass (on a device whose step time grows with every token the
short steps bought no TPOT: docs/benchmarks.md, "Chunking by pace"), and the decodes catch up
in the decode steps that follow. While the cost model prices steps right, a bank never goes
below zero: a decode's ``i``-th token comes at most ``i - 1 + tpot_window - 1`` targets after
its first, so its TPOT over ``g`` gaps is at most ``(1 + (tpot_window - 1) / g) ×
target_step_s``, and no gap exceeds ``tpot_window`` targets. ``tpot_window`` 1 allows no lag:
every step within ``target_step_s``.

``adaptive`` holds the step-time objective only while no prefill is overdue: once a prefilling
request has waited ``ttft_slo_s`` since its arrival, prefills take the whole token budget first
come, first served (as with no decode running) until none is. Even with its allowance the
objective bounds the gaps between a decode's tokens more than their sum: on a device whose
step time grows with every token (no idle compute in a decode step) a prefill token delays the
decodes beside it equally in whichever step it runs, so shorter steps spread the delay without
shrinking mean TPOT, while each extra step costs a pass and smaller decode batches. Under a
backlog that throughput is the queue (docs/benchmarks.md, "Under load"), so the objective
yields to a TTFT deadline.

``adaptive`` learns how far the cost model is from the steps it sees: the engine reports each
step's wall time (:meth:`Chunker.observe`) and a :class:`~asymcache.engine.step_clock.StepClock`
corrects the estimates the next splits use, so the objective holds on a machine whose profile
is off (``engine/step_clock.py`` says by how much it was here).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from asymcache.engine.step_clock import StepClock

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.cost import CostModel

Prefill = tuple[int, int]  # (first position to compute, tokens left to compute)


class Chunker(ABC):
    """Splits one step's token budget between prefilling requests."""

    name = ""
    banks = False  # whether ``split`` wants each decode's bank of seconds (:meth:`settle`)

    def __init__(self, max_tokens: int) -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens = max_tokens
        # steps whose split the TTFT deadline changed (an overdue prefill took more of the
        # step than the step-time objective gave it); ``asymcache_engine_overdue_steps_total``
        self.overdue_steps = 0

    @abstractmethod
    def split(self, decode_contexts: Sequence[int], prefills: Sequence[Prefill],
              waited: Sequence[float] = (), banked: Sequence[float] = ()) -> list[int]:
        """Tokens for each prefilling request this step.

        ``decode_contexts``: context length of each decoding request in the step.
        ``prefills``: ``(first_position, tokens_left)`` of each prefilling request, in service
        order; ``waited``: seconds since each one's arrival (empty: unknown, none overdue).
        ``banked``: each decode's bank, the seconds it may still fall behind its pace
        (:meth:`settle`; empty: none).
        Returns one count per prefill (0 = not this step), each ``<= tokens_left``.
        """

    def observe(self, seconds: float) -> None:  # noqa: B027 - most chunkers learn nothing
        """The wall time of the step the last :meth:`split` planned (nothing to learn here)."""

    def settle(self, bank: float | None, gaps: Sequence[float]) -> float:
        """A decode's bank (``None``: a new decode's) after the gaps between its newest tokens
        (nothing to bank here)."""
        return 0.0


class FixedChunker(Chunker):
    """See the module docstring (``fixed``)."""

    def __init__(self, max_tokens: int, chunk_tokens: int) -> None:
        super().__init__(max_tokens)
        if chunk_tokens <= 0:
            raise ValueError(f"chunk_tokens must be positive, got {chunk_tokens}")
        self.chunk_tokens = min(chunk_tokens, max_tokens)

    def split(self, decode_contexts: Sequence[int], prefills: Sequence[Prefill],
              waited: Sequence[float] = (), banked: Sequence[float] = ()) -> list[int]:
        budget = max(0, self.chunk_tokens - len(decode_contexts))
        return _fcfs(budget, prefills)


class AdaptiveChunker(Chunker):
    """See the module docstring (``adaptive``)."""

    def __init__(
        self, max_tokens: int, cost: CostModel, target_step_s: float, min_prefill_tokens: int,
        calibrate: bool = True, ttft_slo_s: float = 0.0, tpot_window: int = 1,
    ) -> None:
        super().__init__(max_tokens)
        if not target_step_s > 0:
            raise ValueError(f"target_step_s must be positive, got {target_step_s}")
        if min_prefill_tokens <= 0:
            raise ValueError(f"min_prefill_tokens must be positive, got {min_prefill_tokens}")
        if not ttft_slo_s >= 0:
            raise ValueError(f"ttft_slo_s must be >= 0 (0: never overdue), got {ttft_slo_s}")
        if isinstance(tpot_window, bool) or not isinstance(tpot_window, int) or tpot_window < 1:
            raise ValueError(f"tpot_window must be a positive number of tokens, got "
                             f"{tpot_window!r}")
        self.bank_cap = (tpot_window - 1) * target_step_s
        self.banks = tpot_window > 1
        self.cost = cost
        self.ttft_slo_s = ttft_slo_s
        self.target_step_s = target_step_s
        self.min_prefill_tokens = min(min_prefill_tokens, max_tokens)
        self.clock = StepClock()
        self.calibrate = calibrate
        self._planned: tuple[float, float] | None = None  # the last split's (fixed, work) s

    def observe(self, seconds: float) -> None:
        """Correct the cost model by the measured wall time of the last planned step."""
        if self._planned is not None and self.calibrate:
            self.clock.observe(*self._planned, seconds)
            self._planned = None

    def split(self, decode_contexts: Sequence[int], prefills: Sequence[Prefill],
              waited: Sequence[float] = (), banked: Sequence[float] = ()) -> list[int]:
        overdue = self.overdue(waited)
        step_s = self.step_budget(banked)
        out = self._split(decode_contexts, prefills, overdue, step_s)
        if overdue and decode_contexts and \
                out != self._split(decode_contexts, prefills, False, step_s):
            self.overdue_steps += 1  # the deadline changed this step's split
        work = sum(self._more(start, 0, n) for (start, _), n in zip(prefills, out, strict=True))
        self._planned = (self.step_time(decode_contexts), work)
        return out

    def overdue(self, waited: Sequence[float]) -> bool:
        """Whether a prefill has waited ``ttft_slo_s`` or longer (never with 0)."""
        return self.ttft_slo_s > 0 and any(w >= self.ttft_slo_s for w in waited)

    def settle(self, bank: float | None, gaps: Sequence[float]) -> float:
        """``bank`` after these gaps: each adds ``target_step_s`` minus itself, up to the full
        allowance, which is also where a new decode (``bank`` ``None``) starts."""
        if bank is None:
            bank = self.bank_cap
        for gap in gaps:
            bank = min(self.bank_cap, bank + self.target_step_s - gap)
        return bank

    def step_budget(self, banked: Sequence[float]) -> float:
        """Seconds this step may take: ``target_step_s`` and the smallest of the decodes'
        banks (never less than ``target_step_s``)."""
        return self.target_step_s + max(0.0, min(banked, default=0.0))

    def _split(self, decode_contexts: Sequence[int], prefills: Sequence[Prefill],
               overdue: bool, step_s: float) -> list[int]:
        room = max(0, self.max_tokens - len(decode_contexts))
        if overdue or not decode_contexts:  # nothing to protect, or a deadline past it
            return _fcfs(room, prefills)
        # seconds of prefill work the model prices, that fit in what the decodes leave
        left = (step_s - self.clock.fixed * self.step_time(decode_contexts)) / self.clock.work
        out = [0] * len(prefills)
        if prefills:  # the oldest advances every step: its floor is set aside first
            out[0] = min(self.min_prefill_tokens, prefills[0][1], room)
            left -= self._more(prefills[0][0], 0, out[0])
            room -= out[0]
        for i, (start, todo) in enumerate(prefills):  # finish what fits, in service order
            rest, extra = todo - out[i], self._more(start, out[i], todo - out[i])
            if 0 < rest <= room and extra <= left + 1e-12:
                out[i], left, room = todo, left - extra, room - rest
        for i, (start, todo) in enumerate(prefills):  # then as much as fits, first come first
            if out[i] < todo and room > 0:
                n = self._fit(start + out[i], min(todo - out[i], room), left)
                left -= self._more(start, out[i], n)
                out[i], room = out[i] + n, room - n
        short = min(self.min_prefill_tokens, room + sum(out)) - sum(out)
        if short > 0:  # prefill never starves: the floor, first come first served
            more = _fcfs(short, [(s + o, t - o) for (s, t), o in zip(prefills, out, strict=True)])
            out = [o + m for o, m in zip(out, more, strict=True)]
        return out

    def _more(self, start: int, have: int, n: int) -> float:
        """Estimated seconds of ``n`` more tokens of a prefill from ``start`` that already has
        ``have`` tokens in this step (its segment is charged once)."""
        if not n:
            return 0.0
        return self.cost.recompute_cost(start + have, n) + (0.0 if have else self.cost.segment_s)

    def step_time(self, decode_contexts: Sequence[int]) -> float:
        """Estimated seconds of a pass holding only these decodes."""
        return self.cost.pass_s + sum(self.cost.recompute_cost(c, 1) for c in decode_contexts)

    def _fit(self, start: int, limit: int, seconds: float) -> int:
        """Most tokens ``n <= limit`` starting at ``start`` that fit in ``seconds``."""
        fits: Callable[[int], bool] = (
            lambda n: self.cost.recompute_cost(start, n) + self.cost.segment_s <= seconds + 1e-12
        )
        lo, hi = 0, limit
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if fits(mid) else (lo, mid - 1)
        return lo


def _fcfs(budget: int, prefills: Sequence[Prefill]) -> list[int]:
    out = []
    for _, todo in prefills:
        n = min(todo, budget)
        out.append(n)
        budget -= n
    return out


def create_chunker(
    mode: str,
    *,
    max_tokens: int,
    chunk_tokens: int,
    cost: CostModel | None,
    target_step_s: float,
    min_prefill_tokens: int,
    calibrate: bool = True,
    ttft_slo_s: float = 0.0,
    tpot_window: int = 1,
) -> Chunker:
    """The chunker named ``mode`` (``fixed`` or ``adaptive``; ``adaptive`` needs ``cost``;
    ``calibrate``: it corrects ``cost`` by the steps it observes; ``ttft_slo_s``: the wait
    after which a prefill is overdue, 0 never; ``tpot_window``: a decode may fall
    ``tpot_window - 1`` targets behind its pace, 1 none: every step within ``target_step_s``)."""
    if mode == "fixed":
        return FixedChunker(max_tokens, chunk_tokens)
    if mode == "adaptive":
        if cost is None:
            raise ValueError("adaptive chunking needs a cost model")
        return AdaptiveChunker(max_tokens, cost, target_step_s, min_prefill_tokens, calibrate,
                               ttft_slo_s, tpot_window)
    raise ValueError(f"chunking must be 'fixed' or 'adaptive', got {mode!r}")
