"""Building blocks of the synthetic workloads: fresh block ids, shared prompts, sessions.

Block ids are ints handed out in order; a session's context is a list of full-block ids that
grows turn by turn, so every follow-up shares exactly its session's earlier blocks, and every
session that starts from the same shared prompt shares that prompt's blocks. A generated
session's last request carries ``session_end`` (``end_session``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from asymcache.ops.sim.trace import Request


class BlockIds:
    """A counter of fresh block ids."""

    def __init__(self) -> None:
        self.next_id = 0

    def take(self, n: int) -> list[int]:
        ids = list(range(self.next_id, self.next_id + max(0, n)))
        self.next_id += max(0, n)
        return ids


class SharedPrompts:
    """``count`` shared prompts (system prompts, agent templates) with Zipf popularity.

    Prompt ``i`` (rank ``i + 1``) is picked with probability proportional to
    ``1 / (i + 1) ** zipf_a``; its length is drawn once, uniform in ``[min_tokens, max_tokens]``.
    """

    def __init__(self, rng: np.random.Generator, ids: BlockIds, block_tokens: int, count: int,
                 zipf_a: float, min_tokens: int, max_tokens: int) -> None:
        weights = 1.0 / np.arange(1, count + 1) ** zipf_a
        self._cdf = np.cumsum(weights / weights.sum())
        self.tokens = rng.integers(min_tokens, max_tokens + 1, size=count).tolist()
        self._blocks = [ids.take(t // block_tokens) for t in self.tokens]

    def pick(self, rng: np.random.Generator) -> int:
        return int(min(np.searchsorted(self._cdf, rng.random()), len(self._cdf) - 1))

    def blocks(self, prompt: int) -> list[int]:
        return self._blocks[prompt]


@dataclass
class Session:
    """A conversation's context so far: ``tokens`` long, ``blocks`` naming its full blocks."""

    sid: int
    tokens: int
    blocks: list[int] = field(default_factory=list)
    last_s: float = 0.0

    def request_blocks(self, ids: BlockIds, input_tokens: int, block_tokens: int) -> list[int]:
        """Blocks of a prompt that extends this context to ``input_tokens`` tokens."""
        keep = self.blocks[: min(self.tokens, input_tokens) // block_tokens]
        return keep + ids.take(input_tokens // block_tokens - len(keep))

    def advance(self, ids: BlockIds, prompt_blocks: list[int], context_tokens: int,
                block_tokens: int) -> None:
        """After a turn: the context is the prompt plus its output, ``context_tokens`` long."""
        self.tokens = context_tokens
        self.blocks = prompt_blocks + ids.take(context_tokens // block_tokens - len(prompt_blocks))


def lognormal_int(rng: np.random.Generator, median: float, sigma: float, lo: int = 1) -> int:
    """A lognormal draw with the given median, rounded, at least ``lo``."""
    return max(lo, round(float(rng.lognormal(np.log(median), sigma))))


def end_session(requests: list[Request]) -> list[Request]:
    """``requests`` (one session's, in order) with the last marked as the session's end: the
    client stops after its reply (``stop="end_turn"``) and pins nothing."""
    if not requests:
        return requests
    last = replace(requests[-1], session_end=True, stop="end_turn", pin_ttl_s=0.0)
    return [*requests[:-1], last]
