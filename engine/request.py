"""A request's state in the engine: its tokens, its block table, what is left to compute.

A request's *context* is its prompt followed by the tokens generated so far. Positions whose K/V
is in the pool come from three places: resident or fetched blocks (present from admission on)
and computed positions. What is left to compute is a list of ascending position ranges
(``todo``): the recomputed holes and the new suffix. Query tokens are taken from its front, so
every position below ``todo[0]`` has its K/V in the pool; the request is in *prefill* while
``todo`` is not empty and in *decode* after (one query: the last sampled token).
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from asymcache.engine.sampling import SamplingParams


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


class Action(enum.Enum):
    """What the planner decided for one full block of the context."""

    RESIDENT = "resident"      # in this engine's pool already
    FETCH_CPU = "fetch_cpu"    # copy from the daemon's CPU tier
    FETCH_DISK = "fetch_disk"  # the daemon promotes it to CPU, then copy
    FETCH_REMOTE = "fetch_remote"  # the daemon promotes it from its remote tier, then copy
    RECOMPUTE = "recompute"    # cached somewhere before but computed again (holes, dear loads)
    NEW = "new"                # after the last block found anywhere: never cached

    @property
    def computed(self) -> bool:
        return self in (Action.RECOMPUTE, Action.NEW)

    @property
    def fetched(self) -> bool:
        return self in (Action.FETCH_CPU, Action.FETCH_DISK, Action.FETCH_REMOTE)


@dataclass
class RequestStats:
    """Per-request accounting: prompt tokens by source, bytes moved, times (seconds)."""

    resident_tokens: int = 0
    fetched_tokens: int = 0
    recomputed_tokens: int = 0
    new_tokens: int = 0
    preempted_recompute_tokens: int = 0
    bytes_fetched: int = 0     # CPU tier (or wire) → pool, for this request's fetches
    bytes_demoted: int = 0     # pool → CPU tier, victims demoted to make room for it
    bytes_offloaded: int = 0   # pool → CPU tier, its computed blocks written through
    preemptions: int = 0
    arrival: float = 0.0
    first_scheduled: float | None = None
    first_token: float | None = None
    finished: float | None = None
    token_times: list[float] = field(default_factory=list)

    @property
    def cached_tokens(self) -> int:
        """Prompt tokens whose K/V was reused (resident or fetched): OpenAI's cached_tokens."""
        return self.resident_tokens + self.fetched_tokens

    @property
    def ttft(self) -> float | None:
        return None if self.first_token is None else self.first_token - self.arrival

    @property
    def tpot(self) -> float | None:
        """Mean seconds per output token after the first (``None`` with fewer than two)."""
        if len(self.token_times) < 2:
            return None
        return (self.token_times[-1] - self.token_times[0]) / (len(self.token_times) - 1)


class Request:
    """One generation request; see the module docstring for the position bookkeeping."""

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: Sequence[int],
        params: SamplingParams,
        namespace: bytes,
        arrival: float,
        seq: int,
        generator: torch.Generator | None,
    ) -> None:
        if not prompt_token_ids:
            raise ValueError("a prompt needs at least one token")
        self.request_id = request_id
        self.prompt_token_ids = list(prompt_token_ids)
        self.output_token_ids: list[int] = []
        self.params = params
        self.namespace = namespace
        self.seq = seq  # arrival order: lower runs first, higher is preempted first
        self.generator = generator
        self.status = Status.WAITING
        self.stats = RequestStats(arrival=arrival)
        self.keys: list[bytes] = []        # keys of the context's full blocks, in order
        self.slots: list[int] = []         # block table: physical slot of each logical block
        self.actions: list[Action] = []    # planner decision per full block of the context
        self.num_committed = 0             # leading blocks whose commit has been handled
        self.leased: dict[bytes, None] = {}  # keys the daemon leased to it (ordered set)
        self.todo: deque[list[int]] = deque()  # [start, end) position ranges left to compute
        self.finish_reason: str | None = None
        self.logprobs: list[list[tuple[int, float]]] = []  # per output token, when asked
        self.tpot_bank: float | None = None  # adaptive chunking's pace allowance (settle)
        self.tpot_counted = 0  # output tokens whose gaps are in tpot_bank

    # ---- tokens -------------------------------------------------------------------------
    @property
    def tokens(self) -> list[int]:
        return self.prompt_token_ids + self.output_token_ids

    def tokens_at(self, positions: list[int]) -> list[int]:
        """Token ids at ``positions`` (without copying the whole context)."""
        n, out = len(self.prompt_token_ids), self.output_token_ids
        return [self.prompt_token_ids[p] if p < n else out[p - n] for p in positions]

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_token_ids) + len(self.output_token_ids)

    @property
    def in_prefill(self) -> bool:
        return bool(self.todo)

    @property
    def frontier(self) -> int:
        """Every position below this has its K/V in the pool."""
        return self.todo[0][0] if self.todo else self.num_tokens - 1

    @property
    def num_todo(self) -> int:
        return sum(end - start for start, end in self.todo)

    def blocks_needed(self, block_size: int) -> int:
        """Slots the whole context needs (the last token's K/V included)."""
        return -(-self.num_tokens // block_size)

    # ---- chunking -------------------------------------------------------------------------
    def next_queries(self, budget: int) -> list[int]:
        """Up to ``budget`` positions to compute next, ascending (decode: the last token)."""
        if not self.todo:
            return [self.num_tokens - 1]
        out: list[int] = []
        for start, end in self.todo:
            take = min(end - start, budget - len(out))
            out.extend(range(start, start + take))
            if len(out) == budget:
                break
        return out

    def advance(self, n: int) -> None:
        """Mark the first ``n`` queries of :meth:`next_queries` as computed."""
        while n and self.todo:
            start, end = self.todo[0]
            take = min(n, end - start)
            n -= take
            if start + take == end:
                self.todo.popleft()
            else:
                self.todo[0][0] = start + take
