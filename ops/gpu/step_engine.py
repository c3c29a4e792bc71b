"""Step ``engine``: the engine against transformers on a Llama-3-8B-shaped model in bfloat16.

The model (``ops/gpu/llama_shaped.py``): Llama-3-8B's widths, 4 of its layers, random weights
drawn on the GPU in bfloat16, written once to a temporary folder that both sides load onto the
same GPU (transformers with its SDPA attention).

1. **Speed**, as ``ops/bench/_engine_speed.py`` measures it on the CPU: prefill of one
   2048-token prompt (engine: its prefill-only steps; transformers: one forward with
   ``logits_to_keep=1``) and decode of batch 1 and 32 at context 512, 64 new tokens (engine: the
   wall time of its decode-only ``LLMEngine.step`` calls, scheduling and sampling included;
   transformers: the steps of a greedy loop over a ``DynamicCache``). Three alternating rounds;
   medians, and each ratio is the median of the rounds' ratios. Goal: ratio >= 1.
2. **Greedy tokens**: 8 prompts of 128 random ids, 32 new tokens each; the engine batched (with
   its top-5 log-probabilities), transformers one prompt at a time (full logits). While both
   have produced the same tokens, each step compares: the log-probabilities of the engine's
   top 5 (``noise``: the largest difference), and the next token. bfloat16 tolerance:
   :data:`BF16_LOGIT_TOL` = 1.0 in logits. The logits have a standard deviation of about 8;
   bfloat16 keeps 8 significant bits, so a logit near 30 is rounded to 0.125, and measured on
   the CPU at these widths and 4 layers, bfloat16 differs from float32 by up to 0.55 on the top
   five log-probabilities: two bfloat16 implementations, each that far from float32, may differ
   by twice that. A step is *clear* when transformers' top-1 margin is at least twice the
   tolerance: there, different tokens are a bug and fail the step. At an unclear step the two
   may part; that prompt's comparison stops there. Goals: no clear step differs and at least
   half of all steps were compared; the noise is within the tolerance.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymcache.ops.bench._engine_speed import EngineSide
from asymcache.ops.gpu.context import StepContext
from asymcache.ops.gpu.llama_shaped import ShapedSpec, write_model
from asymcache.ops.gpu.results import Goal, StepRecord

BF16_LOGIT_TOL = 1.0
CLEAR_MARGIN = 2 * BF16_LOGIT_TOL
TOP_K = 5


@dataclass(frozen=True)
class Sizes:
    prompt: int
    shapes: tuple[tuple[int, int], ...]  # decode (batch, context)
    decode: int
    rounds: int
    greedy_prompts: int
    greedy_len: int
    greedy_new: int

    @classmethod
    def of(cls, gpu: bool) -> Sizes:
        if gpu:
            return cls(2048, ((1, 512), (32, 512)), 64, 3, 8, 128, 32)
        return cls(32, ((2, 16),), 4, 1, 2, 16, 6)


def run(rec: StepRecord, ctx: StepContext) -> None:
    spec = ShapedSpec() if ctx.gpu else ShapedSpec.tiny()
    dtype = "bfloat16" if ctx.gpu else "float32"
    if not ctx.gpu:
        rec.skip("bf16_llama3_8b_widths", "needs CUDA (the rehearsal runs the recipe at tiny "
                 "widths in float32 on the CPU)")
    folder = Path(tempfile.mkdtemp(prefix="asymcache-gpu-model-"))
    try:
        t0 = time.monotonic()
        write_model(folder, spec, ctx.device, dtype)
        rec.figures.update(model=spec.hf_config(dtype)["asymcache_gpu_check"], dtype=dtype,
                           params=spec.params, write_s=time.monotonic() - t0)
        ctx.log(f"model: {spec.params / 1e6:,.0f} M parameters, {spec.num_layers} layers, "
                f"{dtype}, written in {rec.figures['write_s']:.1f} s")
        _compare(rec, ctx, folder, dtype, Sizes.of(ctx.gpu))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _compare(rec: StepRecord, ctx: StepContext, folder: Path, dtype: str, sizes: Sizes) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from asymcache.engine.llm import LLM
    from asymcache.ops.bench._engine_speed import SpeedPlan

    plan = SpeedPlan(sizes.prompt, sizes.shapes, sizes.decode, sizes.rounds)
    t0 = time.monotonic()
    llm = LLM(str(folder), device=ctx.device, dtype=dtype, reuse="none",
              cost_model="h100-llama3-8b", **plan.engine_options())
    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype),
                                              attn_implementation="sdpa").to(ctx.device).eval()
    rec.figures["load_s"] = time.monotonic() - t0
    try:
        engine, oracle = _EngineSide(llm), _HFSide(hf, ctx.device)
        vocab = llm.engine.info.vocab_size
        rec.figures["greedy"] = _greedy(engine, oracle, sizes, vocab, ctx)
        _greedy_goals(rec, ctx)
        rec.save(ctx.out)
        rec.figures["speed"] = _speed(engine, oracle, plan, vocab, ctx)
        _speed_goals(rec, ctx)
    finally:
        llm.close()


def _prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    from asymcache.ops.bench._engine_speed import prompts

    return prompts(n, length, vocab, seed)


# ---- speed --------------------------------------------------------------------------------
def _speed(engine: _EngineSide, oracle: _HFSide, plan: Any, vocab: int,
           ctx: StepContext) -> list[dict[str, Any]]:
    cases = [("prefill", 1, plan.prompt)] + [("decode", b, c) for b, c in plan.shapes]
    for side in (engine, oracle):  # warm-up: kernels compile, pools allocate
        side.prefill(_prompts(1, min(plan.prompt, 256), vocab, 1))
        side.decode(_prompts(2, 16, vocab, 1), 4)
    rounds: list[dict[str, tuple[float, float]]] = []
    for r in range(plan.rounds):
        if ctx.left() < 10 and rounds:
            ctx.log(f"speed: stopping after {len(rounds)} round(s), the step's bound is near")
            break
        row = {}
        for kind, batch, context in cases:
            ids = _prompts(batch, context, vocab, 2 + batch + context)
            row[f"{kind} b{batch} ctx{context}"] = tuple(
                side.prefill(ids) if kind == "prefill" else side.decode(ids, plan.decode)
                for side in (engine, oracle))
        rounds.append(row)
        ctx.log(f"speed round {r + 1}: " + ", ".join(f"{k} {e:,.0f} vs {h:,.0f} tok/s"
                                                     for k, (e, h) in row.items()))
    return [{"case": key, "engine_tok_s": statistics.median(r[key][0] for r in rounds),
             "transformers_tok_s": statistics.median(r[key][1] for r in rounds),
             "ratio": statistics.median(r[key][0] / r[key][1] for r in rounds),
             "rounds": [r[key] for r in rounds]} for key in rounds[0]]


def _speed_goals(rec: StepRecord, ctx: StepContext) -> None:
    for row in rec.figures["speed"]:
        kind = row["case"].split()[0]
        rec.goal(Goal(f"engine_{row['case'].replace(' ', '_')}",
                      f"engine / transformers tokens/s, {row['case']}", 1.0,
                      value=row["ratio"], device=ctx.device,
                      note="" if kind == "prefill" else "decode step wall time"))


class _EngineSide(EngineSide):
    """The engine's tokens/s over its prefill-only or decode-only steps (the engine benchmark's
    measure), and greedy outputs with their log-probabilities."""

    def greedy(self, ids: list[list[int]], new_tokens: int) -> list[Any]:
        from asymcache.engine.sampling import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True,
                                logprobs=TOP_K)
        return self.llm.generate(ids, params)


class _HFSide:
    """transformers on the device: timed forwards, and a greedy loop keeping every step's
    log-probabilities."""

    def __init__(self, model: Any, device: str) -> None:
        self.model, self.device = model, device

    def _sync(self) -> None:
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()

    def prefill(self, ids: list[list[int]]) -> float:
        import torch

        x = torch.tensor(ids, device=self.device)
        with torch.inference_mode():
            self._sync()
            t0 = time.perf_counter()
            self.model(x, logits_to_keep=1)
            self._sync()
            return x.numel() / (time.perf_counter() - t0)

    def decode(self, ids: list[list[int]], new_tokens: int) -> float:
        import torch
        from transformers import DynamicCache

        x = torch.tensor(ids, device=self.device)
        with torch.inference_mode():
            cache = DynamicCache()
            out = self.model(x, cache=cache, use_cache=True, logits_to_keep=1)
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            self._sync()
            seconds = 0.0
            for _ in range(new_tokens - 1):
                t0 = time.perf_counter()
                out = self.model(nxt, cache=cache, use_cache=True)
                nxt = out.logits[:, -1].argmax(-1, keepdim=True)
                nxt.tolist()  # the engine hands tokens to Python every step too
                seconds += time.perf_counter() - t0
        return x.shape[0] * (new_tokens - 1) / seconds

    def greedy_logprobs(self, ids: list[int], new_tokens: int) -> list[Any]:
        """Per step: float32 log-probabilities ``[vocab]`` of the next token (on the device)."""
        import torch
        from transformers import DynamicCache

        steps = []
        with torch.inference_mode():
            cache = DynamicCache()
            out = self.model(torch.tensor([ids], device=self.device), cache=cache,
                             use_cache=True, logits_to_keep=1)
            for _ in range(new_tokens):
                logp = torch.log_softmax(out.logits[0, -1].float(), dim=-1)
                steps.append(logp)
                nxt = logp.argmax().view(1, 1)
                out = self.model(nxt, cache=cache, use_cache=True)
        return steps


# ---- greedy tokens ------------------------------------------------------------------------
def _greedy(engine: _EngineSide, oracle: _HFSide, sizes: Sizes, vocab: int,
            ctx: StepContext) -> dict[str, Any]:
    prompts = _prompts(sizes.greedy_prompts, sizes.greedy_len, vocab, 7)
    outs = engine.greedy(prompts, sizes.greedy_new)
    per = [_compare_one(out, oracle.greedy_logprobs(p, sizes.greedy_new))
           for p, out in zip(prompts, outs, strict=True)]
    total = sizes.greedy_prompts * sizes.greedy_new
    result = {"prompts": len(prompts), "new_tokens": sizes.greedy_new, "steps": total,
              "compared": sum(p["compared"] for p in per),
              "clear_compared": sum(p["clear"] for p in per),
              "mismatches": [m for p in per for m in p["mismatches"]],
              "noise": max(p["noise"] for p in per),
              "min_margin": min((p["min_margin"] for p in per), default=None),
              "margins_median": statistics.median(m for p in per for m in p["margins"]),
              "tolerance": BF16_LOGIT_TOL, "clear_margin": CLEAR_MARGIN, "per_prompt": per}
    ctx.log(f"greedy: {result['compared']}/{total} steps compared ({result['clear_compared']} "
            f"clear), {len(result['mismatches'])} clear mismatches, noise {result['noise']:.3f} "
            f"(tolerance {BF16_LOGIT_TOL}), median margin {result['margins_median']:.2f}")
    return result


def _compare_one(out: Any, hf_steps: list[Any]) -> dict[str, Any]:
    """One prompt: compare step by step while the two contexts are equal (module docstring)."""
    compared, clear, noise, margins, mismatches = 0, 0, 0.0, [], []
    for j, (token, top, logp) in enumerate(zip(out.token_ids, out.logprobs, hf_steps,
                                               strict=False)):
        two = logp.topk(2)
        margin = float(two.values[0] - two.values[1])
        hf_token = int(two.indices[0])
        ids = [i for i, _ in top]
        hf_lp = logp[ids].tolist()
        noise = max(noise, *(abs(e - h) for (_, e), h in zip(top, hf_lp, strict=True)))
        compared += 1
        margins.append(margin)
        clear += margin >= CLEAR_MARGIN
        if token != hf_token:
            if margin >= CLEAR_MARGIN:
                mismatches.append({"step": j, "engine": token, "transformers": hf_token,
                                   "margin": margin})
            break
    return {"compared": compared, "clear": int(clear), "noise": noise, "margins": margins,
            "min_margin": min(margins) if margins else None, "mismatches": mismatches}


def _greedy_goals(rec: StepRecord, ctx: StepContext) -> None:
    g = rec.figures["greedy"]
    share = g["compared"] / g["steps"]
    ok = not g["mismatches"] and share >= 0.5
    rec.goal(Goal("greedy_equal", "greedy tokens equal transformers' (clear steps)", 1.0,
                  value=1.0 if ok else 0.0, unit="%", device=ctx.device,
                  note=f"{g['compared']}/{g['steps']} steps compared, "
                       f"{len(g['mismatches'])} clear mismatches"))
    rec.goal(Goal("bf16_noise", "log-probability noise vs transformers (max)", BF16_LOGIT_TOL,
                  at_least=False, value=g["noise"], device=ctx.device,
                  note=f"median top-1 margin {g['margins_median']:.2f}"))
    if g["mismatches"]:
        rec.status = "failed"
        rec.error = f"greedy tokens differ where the margin is clear: {g['mismatches'][:3]}"
