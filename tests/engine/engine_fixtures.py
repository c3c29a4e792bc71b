"""Helpers for engine tests: the built-in model, real-text prompts, a no-cache reference run
with its top-1 margins asserted, and a real daemon process on a temporary ipc path.

Tolerance: the engine runs float32 on CPU. Log-probabilities of one prompt computed in
different batch shapes, chunkings (7 to 2048 tokens) and with cached blocks differ by at most
3e-5 (measured on the built-in model); every reference token must win by more than
:data:`MARGIN` = 5e-4 (in log-probability, i.e. logit difference), so a different greedy token
is always a bug, never float noise (DESIGN.md section 6).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from asymcache.engine.engine import RequestOutput
from asymcache.engine.llm import LLM
from asymcache.engine.sampling import SamplingParams

MARGIN = 5e-4
COST = "h100-llama3-8b"  # a preset: fetching always beats recomputing, so plans are exact
BLOCK_BYTES = 32768  # one block of the built-in model (4 layers, 2 KV heads of 32, fp32, 16 tok)


def make_llm(**options: Any) -> LLM:
    """An engine on the built-in model with test defaults (fixed 64-token chunks)."""
    defaults = {"num_gpu_blocks": 64, "cost_model": COST, "chunking": "fixed",
                "chunk_tokens": 64, "daemon_timeout_s": 1.0}
    return LLM("builtin", **{**defaults, **options})


def corpus_ids(llm: LLM, n: int, length: int, offset: int = 0) -> list[list[int]]:
    """``n`` different prompts of ``length`` token ids cut from the shipped corpus text."""
    from asymcache.engine.builtin.vocab import corpus_paragraphs

    ids = llm.tokenizer.encode(" ".join(corpus_paragraphs()), add_special_tokens=False)
    step = max(1, (len(ids) - length) // max(1, n))
    out = [ids[offset + i * step: offset + i * step + length] for i in range(n)]
    assert all(len(p) == length for p in out), "the corpus is too short for these prompts"
    return out


def greedy(max_tokens: int, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True, logprobs=2,
                          **kw)


def reference(prompts: Sequence[list[int]], max_tokens: int) -> list[list[int]]:
    """Greedy tokens of a no-cache engine, each with its top-1 margin asserted > MARGIN."""
    llm = make_llm(reuse="none")
    outs = llm.generate(list(prompts), greedy(max_tokens))
    llm.close()
    for out in outs:
        assert out.logprobs is not None
        for pos, top in enumerate(out.logprobs):
            margin = top[0][1] - top[1][1]
            assert margin > MARGIN, f"reference token {pos} wins by only {margin:.2e}"
    return [o.token_ids for o in outs]


def assert_same(outs: Sequence[RequestOutput], ref: Sequence[list[int]]) -> None:
    for i, (out, want) in enumerate(zip(outs, ref, strict=True)):
        assert out.token_ids == want, f"prompt {i}: tokens differ from the no-cache run"


def wait_healthy(url: str, proc: subprocess.Popen, log: Path) -> None:
    """Wait (up to 120 s) until the engine server at ``url`` answers ``/health`` with 200;
    fail with the tail of its ``log`` if the process exits first."""
    import httpx

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"server exited: {log.read_text()[-2000:]}"
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the engine server did not become healthy")
