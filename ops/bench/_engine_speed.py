"""Prefill and decode tokens/s of the engine against transformers eager, in alternating rounds.

Both sides use the same weights, float32, the same thread count, the same token ids. Each round
measures the engine, then transformers, for the prefill and for every decode shape (batch ×
context), so a shared machine's drifting load hits both sides alike; the figures are medians
over the rounds and each ratio is the median of the rounds' ratios.

* prefill: one ``prompt``-token prompt. Engine: its prefill-only steps; transformers:
  ``model(ids, logits_to_keep=1)`` (both compute the last token's logits only).
* decode: ``batch`` sequences of ``context`` prompt tokens, ``decode`` new tokens each. Engine:
  its decode-only steps (wall time of ``LLMEngine.step``: scheduling, metadata, forward,
  sampling, detokenization); transformers: the timed decode steps of a greedy loop over
  ``model(next_ids, cache=cache)`` after an untimed prefill (what ``generate`` does per
  token, without its own bookkeeping: a stricter baseline than ``generate``).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BLOCK = 16


@dataclass(frozen=True)
class SpeedPlan:
    """What to measure: prefill length, decode shapes, decode length, rounds."""

    prompt: int
    shapes: tuple[tuple[int, int], ...]  # (batch, context) of each decode measurement
    decode: int
    rounds: int

    def __post_init__(self) -> None:
        if min(self.prompt, self.decode, self.rounds) < 1 or self.decode < 2:
            raise ValueError("prompt and rounds must be >= 1 and decode >= 2")
        if not self.shapes or min(min(s) for s in self.shapes) < 1:
            raise ValueError(f"decode shapes must be positive (batch, context), got {self.shapes}")

    def engine_options(self) -> dict[str, Any]:
        """LLM options with room for the largest decode shape and the prefill."""
        tokens = max([self.prompt] + [c for _, c in self.shapes]) + self.decode
        batch = max(b for b, _ in self.shapes)
        chunk = max(self.prompt, max(c for _, c in self.shapes)) * 2
        return {"num_gpu_blocks": batch * (-(-tokens // BLOCK) + 1) + 16, "chunking": "fixed",
                "chunk_tokens": chunk, "max_num_batched_tokens": chunk, "max_num_seqs": batch}


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    """``n`` seeded random prompts of ``length`` token ids in ``[3, vocab)``."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, length), generator=g).tolist()


def measure(model_dir: Path, plan: SpeedPlan, log: Callable[[str], None]) -> dict[str, Any]:
    """Run ``plan`` (see the module docstring); returns the medians, ratios and every round."""
    import torch
    from transformers import AutoModelForCausalLM

    from asymcache.engine.llm import LLM

    llm = LLM(str(model_dir), reuse="none", **plan.engine_options())
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                              attn_implementation="eager").eval()
    vocab = llm.engine.info.vocab_size
    sides = {"engine": EngineSide(llm), "transformers": _HFSide(hf)}
    cases = [("prefill", 1, plan.prompt)] + [("decode", b, c) for b, c in plan.shapes]
    rounds: list[dict[str, dict[str, float]]] = []
    try:
        for side in sides.values():  # warm-up: first calls allocate and page in
            side.prefill(prompts(1, min(plan.prompt, 64), vocab, 1))
            side.decode(prompts(1, 8, vocab, 1), 2)
        for r in range(plan.rounds):
            row = {}
            for kind, batch, ctx in cases:
                ids = prompts(batch, ctx, vocab, 2 + ctx + batch)
                row[_key(kind, batch, ctx)] = {
                    name: side.prefill(ids) if kind == "prefill" else side.decode(ids, plan.decode)
                    for name, side in sides.items()}
            rounds.append(row)
            log(f"  round {r + 1}/{plan.rounds}: " + ", ".join(
                f"{k} {v['engine']:,.0f} vs {v['transformers']:,.0f}" for k, v in row.items()))
    finally:
        llm.close()
    return _summary(rounds, cases)


def _key(kind: str, batch: int, ctx: int) -> str:
    return f"prefill {ctx}" if kind == "prefill" else f"decode b{batch} ctx{ctx}"


def _summary(rounds: list[dict[str, dict[str, float]]], cases: list) -> dict[str, Any]:
    rows = []
    for kind, batch, ctx in cases:
        per = [r[_key(kind, batch, ctx)] for r in rounds]
        rows.append({"kind": kind, "batch": batch, "context": ctx,
                     "engine_tok_s": statistics.median(p["engine"] for p in per),
                     "transformers_tok_s": statistics.median(p["transformers"] for p in per),
                     "ratio": statistics.median(p["engine"] / p["transformers"] for p in per),
                     "rounds": per})
    return {"rows": rows}


class EngineSide:
    """The engine's tokens/s over its prefill-only or decode-only steps."""

    def __init__(self, llm: Any) -> None:
        self.llm, self.engine = llm, llm.engine
        self.count = 0

    def prefill(self, ids: list[list[int]]) -> float:
        return self._run(ids, 1, prefill=True)

    def decode(self, ids: list[list[int]], new_tokens: int) -> float:
        return self._run(ids, new_tokens, prefill=False)

    def _run(self, ids: list[list[int]], new_tokens: int, prefill: bool) -> float:
        from asymcache.engine.sampling import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
        for prompt in ids:
            self.count += 1
            self.engine.add_request(f"bench-{self.count}", prompt, params)
        tokens, seconds = 0, 0.0
        while self.engine.has_unfinished:
            self.engine.step()
            s = self.engine.last_step
            if (prefill and s.prefill_tokens and not s.decodes) or \
                    (not prefill and s.decodes == len(ids) and not s.prefill_tokens):
                tokens += s.prefill_tokens + s.decodes
                seconds += s.seconds
        return tokens / max(seconds, 1e-9)


class _HFSide:
    """transformers eager: one forward for prefill; timed steps of a greedy cached loop."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def prefill(self, ids: list[list[int]]) -> float:
        import torch

        x = torch.tensor(ids)
        with torch.inference_mode():
            t0 = time.perf_counter()
            self.model(x, logits_to_keep=1)  # as the engine: logits of the last token only
            return x.numel() / (time.perf_counter() - t0)

    def decode(self, ids: list[list[int]], new_tokens: int) -> float:
        import torch
        from transformers import DynamicCache

        x = torch.tensor(ids)
        with torch.inference_mode():
            cache = DynamicCache()
            out = self.model(x, cache=cache, use_cache=True)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            seconds = 0.0
            for _ in range(new_tokens - 1):
                t0 = time.perf_counter()
                out = self.model(nxt, cache=cache, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                nxt.tolist()  # the engine hands tokens to Python every step too
                seconds += time.perf_counter() - t0
        return x.shape[0] * (new_tokens - 1) / seconds
