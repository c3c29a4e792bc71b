"""Continuous batching with decodes first, chunked prefill and preemption.

Each step the scheduler (1) gives every decoding request a slot for its next token, preempting
the lowest-priority running request (the latest arrival) when the pool is full instead of
failing; (2) admits waiting requests first come, first served while the KV manager can place
them; (3) asks the chunker how many prompt tokens each prefilling request computes beside the
decodes (with each decode's pace allowance, for adaptive chunking). A preempted request goes back
to the head of the queue with its tokens so far and is planned again on re-admission (its
committed blocks are often still cached, so it recomputes little). Torch-free: the KV manager
does lookups, allocation and copies.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from asymcache.engine.chunking import Chunker
from asymcache.engine.request import Request, Status


class KVManagerLike(Protocol):
    """What the scheduler asks of the KV manager (``asymcache.engine.kv_manager.KVManager``)."""

    def admit(self, req: Request, now: float) -> bool: ...

    def append_slot(self, req: Request, now: float) -> bool: ...

    def preempt(self, req: Request) -> None: ...


@dataclass(frozen=True)
class ScheduledSeq:
    """One request's part of a step: the positions it computes, whether its logits are sampled,
    whether it is a decode (one new token) rather than a prefill chunk."""

    request: Request
    positions: list[int]
    sample: bool
    decode: bool = False


class Scheduler:
    """Waiting queue, running set and the per-step decision; see the module docstring."""

    def __init__(
        self,
        kv: KVManagerLike,
        chunker: Chunker,
        max_num_seqs: int,
        on_preempt: Callable[[Request], None] | None = None,
    ) -> None:
        if max_num_seqs <= 0:
            raise ValueError(f"max_num_seqs must be positive, got {max_num_seqs}")
        self.kv = kv
        self.chunker = chunker
        self.max_num_seqs = max_num_seqs
        self.on_preempt = on_preempt
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, req: Request) -> None:
        req.status = Status.WAITING
        self.waiting.append(req)

    def remove(self, req: Request) -> None:
        """Forget a finished or aborted request (the caller releases its KV)."""
        if req in self.running:
            self.running.remove(req)
        elif req in self.waiting:
            self.waiting.remove(req)

    def admit(self, now: float) -> list[Request]:
        """Admit waiting requests in order while there is room; returns those admitted."""
        admitted = []
        while self.waiting and len(self.running) < self.max_num_seqs:
            req = self.waiting[0]
            if not self.kv.admit(req, now):
                break
            self.waiting.popleft()
            req.status = Status.RUNNING
            self.running.append(req)
            admitted.append(req)
        return admitted

    def schedule(self, now: float) -> list[ScheduledSeq]:
        """The running requests' work for this step (decodes first, then prefill chunks)."""
        self._grow_decodes(now)
        running = sorted(self.running, key=lambda r: r.seq)
        decodes = [r for r in running if not r.in_prefill]
        prefills = [r for r in running if r.in_prefill]
        counts = self.chunker.split(
            [r.num_tokens for r in decodes], [(r.frontier, r.num_todo) for r in prefills],
            [now - r.stats.arrival for r in prefills],
            [self._settle(r) for r in decodes] if self.chunker.banks else (),
        )
        out = [ScheduledSeq(r, [r.num_tokens - 1], True, decode=True) for r in decodes]
        for req, n in zip(prefills, counts, strict=True):
            if n:
                out.append(ScheduledSeq(req, req.next_queries(n), n == req.num_todo))
        return out

    def _settle(self, req: Request) -> float:
        """``req``'s pace allowance, settled with the gaps between its tokens since last asked."""
        times = req.stats.token_times
        gaps = [times[i] - times[i - 1] for i in range(max(1, req.tpot_counted), len(times))]
        req.tpot_bank = self.chunker.settle(req.tpot_bank, gaps)
        req.tpot_counted = len(times)
        return req.tpot_bank

    def _grow_decodes(self, now: float) -> None:
        for req in sorted(self.running, key=lambda r: r.seq):
            if req.in_prefill or req.status is not Status.RUNNING:
                continue
            while not self.kv.append_slot(req, now):
                victim = max(self.running, key=lambda r: r.seq)
                self._preempt(victim)
                if victim is req:
                    break

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.kv.preempt(req)
        req.status = Status.WAITING
        req.stats.preemptions += 1
        self.waiting.appendleft(req)
        if self.on_preempt is not None:
            self.on_preempt(req)
