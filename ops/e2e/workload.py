"""The end-to-end workload: requests of real token ids on a timeline, built from a sim trace.

A :class:`Workload` is what the driver replays: each :class:`E2ERequest` has an arrival time,
its prompt as token ids, an output length (greedy, EOS ignored, so every configuration generates
exactly that many tokens) and an optional TTL pin. Its timeline is kept at a mean arrival rate
(``rate`` requests per second); :meth:`Workload.at_rate` rescales it (pins included), which is
how calibration and the rate sweep change the load without changing the requests.

Prompts come from a simulator trace (``asymcache.ops.sim.trace.Trace``): every trace block id
becomes
``tokens_per_block`` synthetic token ids drawn from a generator seeded by the id (BLAKE2b of the
workload name and the id), so equal ids give equal tokens and hence equal chained block keys
(shared KV), different ids different tokens. The tokens past the last full block are fresh for
each request. :meth:`Workload.to_trace` goes back: the simulator trace of exactly these prompts,
at the engine's block granularity, for the simulator's prediction of the same run.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass, replace

import numpy as np

from asymcache.cacheserver.blocks import block_keys
from asymcache.ops.sim.trace import Request, Trace

FIRST_TOKEN = 6  # ids below are the built-in model's special tokens
_NAMESPACE = bytes(16)  # block identity only: any fixed namespace


@dataclass(frozen=True)
class E2ERequest:
    """One request of a workload (times in seconds at the workload's ``rate``)."""

    request_id: str
    arrival_s: float
    prompt: tuple[int, ...]
    max_tokens: int
    pin_ttl_s: float = 0.0
    session: int = -1
    session_end: bool = False  # the client ends its session after this request's response
    retention_s: float = 0.0  # the client asks its prefix kept this long (0: not asked)

    def cache_key(self, workload: str) -> str | None:
        """The ``prompt_cache_key`` this request is sent with: its session's, if it has one."""
        return f"{workload}-session-{self.session}" if self.session >= 0 else None


@dataclass(frozen=True)
class Workload:
    """Requests in arrival order at mean rate ``rate`` (requests/s); see the module doc."""

    name: str
    requests: tuple[E2ERequest, ...]
    rate: float
    block_size: int
    description: str = ""

    def __post_init__(self) -> None:
        if not self.requests:
            raise ValueError(f"workload {self.name}: no requests")
        if not self.rate > 0:
            raise ValueError(f"workload {self.name}: rate must be > 0, got {self.rate}")
        times = [r.arrival_s for r in self.requests]
        if any(b < a for a, b in itertools.pairwise(times)):
            raise ValueError(f"workload {self.name}: arrivals must not decrease")

    def __len__(self) -> int:
        return len(self.requests)

    def at_rate(self, rate: float) -> Workload:
        """The same requests with arrival times (and TTL pins) scaled to ``rate`` per second."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0, got {rate}")
        k = self.rate / rate
        reqs = tuple(replace(r, arrival_s=r.arrival_s * k, pin_ttl_s=r.pin_ttl_s * k,
                             retention_s=r.retention_s * k) for r in self.requests)
        return replace(self, requests=reqs, rate=rate)

    def spread_sample(self, n: int) -> Workload:
        """About ``n`` requests taken evenly across the whole workload (every k-th), on their
        own arrival times: lengths as in the whole run, e.g. late turns of long sessions."""
        k = max(1, len(self.requests) // max(1, n))
        return replace(self, requests=self.requests[::k][: max(1, n)], rate=self.rate / k)

    @property
    def span_s(self) -> float:
        return self.requests[-1].arrival_s - self.requests[0].arrival_s

    def block_ids(self) -> list[list[int]]:
        """Per request, an int per full prompt block naming its identity (its chained key)."""
        ids: dict[bytes, int] = {}
        return [[ids.setdefault(k, len(ids)) for k in block_keys(_NAMESPACE, r.prompt,
                                                                  self.block_size)]
                for r in self.requests]

    def unique_blocks(self) -> int:
        return len({b for blocks in self.block_ids() for b in blocks})

    def max_context_blocks(self) -> int:
        """Slots the longest request needs (prompt and output)."""
        return max(-(-(len(r.prompt) + r.max_tokens) // self.block_size) for r in self.requests)

    def output_blocks(self) -> int:
        """Blocks the outputs can fill, over all requests (each request's partial prompt tail
        and its output tokens, rounded up, plus one)."""
        bs = self.block_size
        return sum(-(-(len(r.prompt) % bs + r.max_tokens) // bs) + 1 for r in self.requests)

    def to_trace(self) -> Trace:
        """The simulator trace of these prompts (engine block size, same arrivals and pins)."""
        reqs = [Request(r.arrival_s, tuple(b), len(r.prompt), r.max_tokens, r.pin_ttl_s,
                        r.session, r.session_end, r.retention_s)
                for r, b in zip(self.requests, self.block_ids(), strict=True)]
        return Trace(f"e2e-{self.name}", self.block_size, reqs, self.description,
                     {"rate": self.rate})


@dataclass(frozen=True)
class Mapping:
    """How a trace becomes token ids: tokens per trace block, output scale and caps."""

    tokens_per_block: int
    output_scale: float = 1.0
    max_output: int = 64
    max_context: int = 4096
    vocab_size: int = 2048
    seed: int = 0


def from_trace(name: str, trace: Trace, mapping: Mapping, block_size: int,
               description: str = "") -> Workload:
    """A workload of ``trace``'s requests at mean rate 1/s (arrival order and gaps kept).

    Prompts longer than ``mapping.max_context - max_tokens`` drop their last full blocks (a
    shorter prefix of the same conversation); the fresh tail is always kept."""
    if mapping.tokens_per_block % block_size:
        raise ValueError(f"tokens_per_block ({mapping.tokens_per_block}) must be a multiple of "
                         f"the engine block size ({block_size})")
    tokens = BlockTokens(name, mapping)
    t0 = trace.requests[0].arrival_s
    span = max(trace.requests[-1].arrival_s - t0, 1e-9)
    unit = span / max(1, len(trace) - 1)  # seconds of the trace per mean inter-arrival gap
    out = []
    for i, req in enumerate(trace.requests):
        n_out = min(mapping.max_output, max(1, round(req.output_tokens * mapping.output_scale)))
        tail_len = req.input_tokens - len(req.blocks) * trace.block_tokens
        tail = tokens.fresh(i, max(1, round(tail_len * mapping.tokens_per_block
                                            / trace.block_tokens)))
        room = (mapping.max_context - n_out - len(tail)) // mapping.tokens_per_block
        prompt = [t for b in req.blocks[: max(0, room)] for t in tokens.block(b)] + tail
        out.append(E2ERequest(f"{name}-{i:04d}", (req.arrival_s - t0) / unit, tuple(prompt),
                              n_out, req.pin_ttl_s / unit, req.session, req.session_end,
                              req.retention_s / unit))
    return Workload(name, tuple(out), 1.0, block_size, description)


class BlockTokens:
    """Seeded synthetic token ids: one fixed run per trace block id, fresh runs per request."""

    def __init__(self, name: str, mapping: Mapping) -> None:
        self.name, self.m = name, mapping

    def block(self, block_id: int) -> list[int]:
        return self._draw(f"block:{block_id}", self.m.tokens_per_block)

    def fresh(self, index: int, n: int) -> list[int]:
        return self._draw(f"tail:{index}", n)

    def _draw(self, label: str, n: int) -> list[int]:
        digest = hashlib.blake2b(f"{self.name}:{self.m.seed}:{label}".encode(),
                                 digest_size=8).digest()
        rng = np.random.default_rng(int.from_bytes(digest, "little"))
        return rng.integers(FIRST_TOKEN, self.m.vocab_size, size=n).tolist()
