"""The soak's prompts and their no-cache references.

Prompts are token ids (the built-in model's vocabulary, specials excluded), each a 64-token
prefix and a body of 32 to 144 tokens:

* ``twin`` — a shared system prefix and a body, sent by BOTH tenants with identical tokens:
  whatever one tenant cached, a leak would show as ``cached_tokens`` of the other;
* ``shared`` — a shared system prefix and a body of one tenant;
* ``private`` — one of the tenant's own prefixes and a body.

Every prompt's greedy output comes from an engine in this process with ``reuse="none"`` (no
cache at all), batched (``feeder.py`` keeps enough prompts ahead of the load); each output
token must win its top-1 by more than :data:`MARGIN` in log-probability (float32 on CPU varies
by at most 3e-5 with batch shape and chunking, see DESIGN.md section 6), and prompts whose
reference does not are dropped (counted), so that a different token at an engine is always a
bug, never noise.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np

from asymcache.ops.e2e.workload import FIRST_TOKEN

MARGIN = 5e-4  # the engine tests' tolerance (tests/engine/engine_fixtures.py)
PREFIX_TOKENS = 64
BODY_TOKENS = (32, 144)
SHARED_PREFIXES = 4
PRIVATE_PREFIXES = 2  # per tenant
TENANTS = 2
REFERENCE_BATCH = 64
VOCAB = 2048  # the built-in model's


@dataclass(frozen=True)
class Prompt:
    """One prompt, who may send it, and its no-cache greedy output (ids, text, and each
    token's text as the HTTP API's ``logprobs.tokens`` gives it)."""

    pid: int
    kind: str
    tenants: tuple[int, ...]
    tokens: tuple[int, ...]
    ref_ids: tuple[int, ...] = ()
    ref_text: str = ""
    ref_pieces: tuple[str, ...] = ()
    margin: float = 0.0


@dataclass(frozen=True)
class ModelKeys:
    """What block keys of the engines' model are made of (for the probes that find blocks)."""

    fingerprint: str
    layout: object  # cacheserver.blocks.KVLayout
    block_size: int


def prompt_stream(seed: int) -> Iterator[Prompt]:
    """Prompts without end, the same for the same seed: 40% twins, 30% shared-prefix, 30%
    private, tenants alternating."""
    rng = np.random.default_rng(seed)

    def tokens(k: int) -> list[int]:
        return rng.integers(FIRST_TOKEN, VOCAB, size=k).tolist()

    shared = [tokens(PREFIX_TOKENS) for _ in range(SHARED_PREFIXES)]
    private = [[tokens(PREFIX_TOKENS) for _ in range(PRIVATE_PREFIXES)] for _ in range(TENANTS)]
    for pid in itertools.count():
        body = tokens(int(rng.integers(BODY_TOKENS[0], BODY_TOKENS[1] + 1)))
        slot, tenant = pid % 10, (pid // 10) % TENANTS
        if slot < 4:
            kind, who, prefix = "twin", tuple(range(TENANTS)), shared[pid % SHARED_PREFIXES]
        elif slot < 7:
            kind, who, prefix = "shared", (tenant,), shared[(pid // 3) % SHARED_PREFIXES]
        else:
            kind, who = "private", (tenant,)
            prefix = private[tenant][pid % PRIVATE_PREFIXES]
        yield Prompt(pid, kind, who, tuple(prefix + body))


class References:
    """The no-cache engine (built-in model, ``reuse="none"``, one CPU thread) in this process;
    :meth:`check` gives prompts their reference outputs."""

    def __init__(self, max_tokens: int) -> None:
        from asymcache.engine.llm import LLM
        from asymcache.engine.sampling import SamplingParams

        self.llm = LLM("builtin", reuse="none", num_gpu_blocks=1024,
                       cost_model="h100-llama3-8b", cpu_threads=1)
        self.params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True,
                                     logprobs=2)
        kv = self.llm.engine.kv
        self.keys = ModelKeys(kv.fingerprint, kv.pool.layout, kv.block_size)
        self.dropped = 0  # prompts whose reference does not clear MARGIN
        self.smallest = float("inf")

    def check(self, prompts: list[Prompt]) -> list[Prompt]:
        """The prompts whose reference clears :data:`MARGIN`, with it (batched)."""
        decode = self.llm.tokenizer.decode
        kept = []
        for at in range(0, len(prompts), REFERENCE_BATCH):
            batch = prompts[at:at + REFERENCE_BATCH]
            outs = self.llm.generate([list(p.tokens) for p in batch], self.params)
            for p, o in zip(batch, outs, strict=True):
                margin = min(top[0][1] - top[1][1] for top in o.logprobs)
                if margin <= MARGIN:
                    self.dropped += 1
                    continue
                self.smallest = min(self.smallest, float(margin))
                kept.append(replace(p, ref_ids=tuple(o.token_ids), ref_text=o.text,
                                    ref_pieces=tuple(decode([t]) for t in o.token_ids),
                                    margin=float(margin)))
        return kept

    def close(self) -> None:
        self.llm.close()
