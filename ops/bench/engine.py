"""``asymcache bench engine``: the engine against transformers, and TTFT with cached blocks.

Measured side by side in one run on this machine, same weights (a Hugging Face folder, the
built-in model by default), float32 on CPU:

* prefill and decode tokens/s of the engine (no cache) against transformers eager: prefill of
  one ``--prompt``-token prompt; decode of ``--batch`` sequences for ``--decode`` tokens.
  Engine figures come from its step timings (prefill-only steps, decode-only steps), the
  transformers ones from ``model(ids)`` and ``generate`` minus its prefill. Goal: ratio >= 1.
* TTFT of a ``--prompt``-token prompt with 0%, 50% and 90% of its blocks cached (the leading
  blocks) in the engine's pool (GPU), in the daemon's CPU tier, or only on disk (after a daemon
  restart), against a real daemon process. The median of ``--repeats`` fresh prompts each.

Prints a table, writes JSON (``--json``) and a PNG of the TTFT bars (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

NAME = "engine"
HELP = ("engine vs transformers (prefill/decode tokens/s) and TTFT with 0, 50 and 90 percent "
        "of the blocks cached")
FRACTIONS = (0.0, 0.5, 0.9)
TIERS = ("gpu", "cpu", "disk")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="builtin", help="model folder or 'builtin'")
    parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens (default 1024)")
    parser.add_argument("--batch", type=int, default=8, help="decoding sequences (default 8)")
    parser.add_argument("--decode", type=int, default=64, help="decode tokens (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="prompts per TTFT cell")
    parser.add_argument("--quick", action="store_true", help="256-token prompts, 4×16 decode")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the TTFT table here")


def run(args: argparse.Namespace) -> int:
    import torch

    torch.manual_seed(0)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    if args.quick:
        args.prompt, args.batch, args.decode, args.repeats = 256, 4, 16, 1
    from engine.builtin import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    print(f"[engine bench] {model_dir.name}: prompt {args.prompt}, batch {args.batch} × "
          f"{args.decode} decode tokens", flush=True)
    speed = _throughput(model_dir, args)
    print("[engine bench] TTFT with cached blocks ...", flush=True)
    ttft = _ttft(model_dir, args)
    result = {"model": model_dir.name, "prompt_tokens": args.prompt, "batch": args.batch,
              "decode_tokens": args.decode, "torch_threads": torch.get_num_threads(), **speed,
              "ttft_ms": ttft}
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot:
        _plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


# ---- throughput ---------------------------------------------------------------------------
def _engine_options(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    tokens = max(args.prompt, args.batch) + args.decode
    blocks = args.batch * (-(-tokens // 16) + 1) + 16
    return {"num_gpu_blocks": blocks, "chunking": "fixed", "chunk_tokens": args.prompt * 2,
            "max_num_batched_tokens": args.prompt * 2, "max_num_seqs": args.batch, **extra}


def _prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (n, length), generator=g).tolist()


def _throughput(model_dir: Path, args: argparse.Namespace) -> dict[str, float]:
    from engine import LLM, SamplingParams

    llm = LLM(str(model_dir), reuse="none", **_engine_options(args))
    vocab = llm.engine.info.vocab_size
    p = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    llm.generate(_prompts(1, args.prompt, vocab, 1), p)  # warm-up
    pre = _engine_steps(llm, _prompts(1, args.prompt, vocab, 2), p, prefill=True)
    d = SamplingParams(temperature=0.0, max_tokens=args.decode, ignore_eos=True)
    dec = _engine_steps(llm, _prompts(args.batch, 32, vocab, 3), d, prefill=False)
    llm.close()
    print(f"  engine: prefill {pre:,.0f} tok/s, decode {dec:,.0f} tok/s", flush=True)
    hf_pre, hf_dec = _transformers(model_dir, args, vocab)
    print(f"  transformers eager: prefill {hf_pre:,.0f} tok/s, decode {hf_dec:,.0f} tok/s",
          flush=True)
    return {"prefill_tok_s_engine": pre, "prefill_tok_s_transformers": hf_pre,
            "decode_tok_s_engine": dec, "decode_tok_s_transformers": hf_dec,
            "prefill_ratio": pre / hf_pre, "decode_ratio": dec / hf_dec}


def _engine_steps(llm: Any, prompts: list[list[int]], params: Any, prefill: bool) -> float:
    """Tokens per second over the engine's prefill-only (or decode-only) steps."""
    engine = llm.engine
    for i, ids in enumerate(prompts):
        engine.add_request(f"bench-{prefill}-{i}", ids, params)
    tokens, seconds = 0, 0.0
    while engine.has_unfinished:
        engine.step()
        s = engine.last_step
        if (prefill and s.prefill_tokens and not s.decodes) or \
                (not prefill and s.decodes == len(prompts) and not s.prefill_tokens):
            tokens += s.prefill_tokens + s.decodes
            seconds += s.seconds
    return tokens / max(seconds, 1e-9)


def _transformers(model_dir: Path, args: argparse.Namespace, vocab: int) -> tuple[float, float]:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    ids = torch.tensor(_prompts(1, args.prompt, vocab, 2))
    batch = torch.tensor(_prompts(args.batch, 32, vocab, 3))
    with torch.inference_mode():
        model(ids[:, :32])  # warm-up
        pre = _best(lambda: model(ids), 2)
        first = _best(lambda: model(batch), 2)
        gen = _best(lambda: model.generate(batch, max_new_tokens=args.decode,
                                           min_new_tokens=args.decode, do_sample=False,
                                           pad_token_id=0), 1)
    return args.prompt / pre, args.batch * (args.decode - 1) / max(gen - first, 1e-9)


def _best(fn: Any, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


# ---- TTFT with cached blocks --------------------------------------------------------------
def _ttft(model_dir: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from cacheserver.launch import DaemonProcess
    from engine import LLM

    with tempfile.TemporaryDirectory(prefix="acb-") as tmp:
        blocks = (len(TIERS) * len(FRACTIONS) * args.repeats + 4) * (args.prompt // 16 + 2)
        flags = {"cpu_bytes": blocks * 33 * 1024 + (64 << 20), "cpu_slot_bytes": "1MiB",
                 "disk_bytes": blocks * 40 * 1024 + (64 << 20), "disk_write_through": "true",
                 "metrics_port": 0, "log_level": "warning"}
        daemon = DaemonProcess(f"ipc://{tmp}/d.ipc", f"{tmp}/data", flags=flags,
                               log_path=f"{tmp}/daemon.log")
        daemon.start()
        opts = _engine_options(args, cache_endpoint=daemon.endpoint, max_num_seqs=4)
        opts["num_gpu_blocks"] = blocks
        writer, reader = LLM(str(model_dir), **opts), LLM(str(model_dir), **opts)
        try:
            return _ttft_cells(writer, reader, daemon, args)
        finally:
            writer.close()
            reader.close()
            daemon.stop()


def _ttft_cells(writer: Any, reader: Any, daemon: Any, args: argparse.Namespace
                ) -> dict[str, dict[str, float]]:
    from engine import SamplingParams
    from engine.client import CacheClient

    one = SamplingParams(temperature=0.0, max_tokens=1, ignore_eos=True)
    vocab = reader.engine.info.vocab_size
    cells = {(t, f): _prompts(args.repeats, args.prompt, vocab, 100 + 10 * i + j)
             for i, t in enumerate(TIERS) for j, f in enumerate(FRACTIONS)}
    warm = _prompts(1, args.prompt, vocab, 99)
    reader.generate(warm, one)
    for (tier, frac), prompts in cells.items():  # put the leading blocks where they belong
        cached = [p[: int(frac * args.prompt) // 16 * 16] for p in prompts]
        holder = reader if tier == "gpu" else writer
        if frac:
            holder.generate(cached, one)
    with CacheClient(daemon.endpoint, heartbeat=False) as c:
        c.flush()
    reader.generate(_prompts(1, args.prompt, vocab, 97), one)  # warm again before measuring
    out: dict[str, dict[str, float]] = {}
    for tier in TIERS:
        if tier == "disk":  # a restart empties the CPU tier; LMDB keeps the blocks
            daemon.stop()
            daemon.start()
            reader.generate(_prompts(1, args.prompt, vocab, 98), one)  # re-registers, warms up
        out[tier] = {}
        for frac in FRACTIONS:
            times = [reader.generate([p], one)[0].stats.ttft for p in cells[(tier, frac)]]
            out[tier][f"{int(frac * 100)}%"] = 1e3 * statistics.median(times)
            print(f"  {tier:>4} {int(frac * 100):>3}% cached: "
                  f"{out[tier][f'{int(frac * 100)}%']:.1f} ms", flush=True)
    return out


# ---- output -------------------------------------------------------------------------------
def _print(r: dict[str, Any]) -> None:
    print()
    print(f"{'':24}{'engine':>12}{'transformers':>14}{'ratio':>8}")
    for what in ("prefill", "decode"):
        e, t = r[f"{what}_tok_s_engine"], r[f"{what}_tok_s_transformers"]
        print(f"{what + ' tokens/s':24}{e:>12,.0f}{t:>14,.0f}{e / t:>8.2f}")
    print()
    print(f"{'TTFT ms':12}" + "".join(f"{f'{int(f * 100)}% cached':>14}" for f in FRACTIONS))
    for tier, row in r["ttft_ms"].items():
        print(f"{tier:12}" + "".join(f"{v:>14.1f}" for v in row.values()))


def _plot(r: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.25
    for i, (tier, row) in enumerate(r["ttft_ms"].items()):
        xs = [j + (i - 1) * width for j in range(len(row))]
        ax.bar(xs, list(row.values()), width, label=tier)
    ax.set_xticks(range(len(FRACTIONS)), [f"{int(f * 100)}% cached" for f in FRACTIONS])
    ax.set_ylabel("TTFT (ms)")
    ax.set_title(f"TTFT of a {r['prompt_tokens']}-token prompt ({r['model']})")
    ax.legend(title="blocks in")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
