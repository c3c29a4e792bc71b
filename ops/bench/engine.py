"""``asymcache bench engine``: the engine against transformers, and TTFT with cached blocks.

Measured side by side in one run on this machine, same weights (a Hugging Face folder, the
built-in model by default), float32 on CPU:

* prefill and decode tokens/s of the engine (no cache) against transformers eager
  (``ops/bench/_engine_speed.py``): prefill of one ``--prompt``-token prompt; decode of
  ``--batch`` sequences (a comma list: ``1,8``) of ``--decode-context`` prompt tokens (a comma
  list: ``32,2048``) for ``--decode`` tokens, every batch × context. Engine and transformers
  alternate in ``--rounds`` rounds; medians and the median of the rounds' ratios. Goal: >= 1.
* TTFT of a ``--prompt``-token prompt with 0%, 50% and 90% of its blocks cached (the leading
  blocks) in the engine's pool (GPU), in the daemon's CPU tier, or only on disk (after a daemon
  restart), against a real daemon process. The median of ``--repeats`` fresh prompts each
  (``--no-ttft`` skips this part).

Prints a table (with the load averages before and after), writes JSON (``--json``) and a PNG of
the TTFT bars (``--plot``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

NAME = "engine"
HELP = ("engine vs transformers (prefill/decode tokens/s) and TTFT with 0, 50 and 90 percent "
        "of the blocks cached")
FRACTIONS = (0.0, 0.5, 0.9)
TIERS = ("gpu", "cpu", "disk")


def _ints(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="builtin", help="model folder or 'builtin'")
    parser.add_argument("--prompt", type=int, default=1024, help="prompt tokens (default 1024)")
    parser.add_argument("--batch", type=_ints, default=[8],
                        help="decoding sequences, comma list (default 8)")
    parser.add_argument("--decode-context", type=_ints, default=[32],
                        help="prompt tokens of each decoding sequence, comma list (default 32)")
    parser.add_argument("--decode", type=int, default=64, help="decode tokens (default 64)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternating engine/transformers throughput rounds (default 3)")
    parser.add_argument("--repeats", type=int, default=3, help="prompts per TTFT cell")
    parser.add_argument("--no-ttft", action="store_true", help="skip the TTFT part")
    parser.add_argument("--quick", action="store_true", help="256-token prompts, 4×16 decode")
    parser.add_argument("--cpu-threads", type=int, default=None,
                        help="torch threads for both sides (default: torch's)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON here")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of the TTFT table here")


def run(args: argparse.Namespace) -> int:
    import torch

    from asymcache.ops.bench._engine_speed import SpeedPlan, measure

    torch.manual_seed(0)
    if args.cpu_threads:
        torch.set_num_threads(args.cpu_threads)
    if args.quick:
        args.prompt, args.batch, args.decode, args.repeats, args.rounds = 256, [4], 16, 1, 1
    from asymcache.engine.builtin import resolve_model_dir

    model_dir = resolve_model_dir(args.model)
    plan = SpeedPlan(args.prompt, tuple((b, c) for c in args.decode_context for b in args.batch),
                     args.decode, args.rounds)
    load_before = list(os.getloadavg())
    print(f"[engine bench] {model_dir.name}: prompt {args.prompt}, decode {args.decode} tokens "
          f"at batch {args.batch} x context {args.decode_context}, {args.rounds} rounds; "
          f"load {load_before[0]:.2f}", flush=True)
    speed = measure(model_dir, plan, lambda line: print(line, flush=True))
    ttft = None
    if not args.no_ttft:
        print("[engine bench] TTFT with cached blocks ...", flush=True)
        ttft = _ttft(model_dir, args)
    result = {"model": model_dir.name, "prompt_tokens": args.prompt, "decode_tokens": args.decode,
              "torch_threads": torch.get_num_threads(), "rounds": args.rounds,
              "load_average_before": load_before, "load_average_after": list(os.getloadavg()),
              **_headline(speed["rows"]), "throughput": speed["rows"], "ttft_ms": ttft}
    _print(result)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")
    if args.plot and ttft is not None:
        _plot(result, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _headline(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The flat figures of the prefill and of the first decode shape (older JSON readers)."""
    pre, dec = rows[0], rows[1]
    return {"batch": dec["batch"], "decode_context": dec["context"],
            "prefill_tok_s_engine": pre["engine_tok_s"],
            "prefill_tok_s_transformers": pre["transformers_tok_s"],
            "decode_tok_s_engine": dec["engine_tok_s"],
            "decode_tok_s_transformers": dec["transformers_tok_s"],
            "prefill_ratio": pre["ratio"], "decode_ratio": dec["ratio"]}


# ---- TTFT with cached blocks --------------------------------------------------------------
def _ttft(model_dir: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from asymcache.engine.llm import LLM
    from asymcache.ops.bench._engine_speed import SpeedPlan
    from asymcache.ops.daemon_process import DaemonProcess

    with tempfile.TemporaryDirectory(prefix="acb-") as tmp:
        blocks = (len(TIERS) * len(FRACTIONS) * args.repeats + 4) * (args.prompt // 16 + 2)
        flags = {"cpu_bytes": blocks * 33 * 1024 + (64 << 20), "cpu_slot_bytes": "1MiB",
                 "disk_bytes": blocks * 40 * 1024 + (64 << 20), "disk_write_through": "true",
                 "metrics_port": 0, "log_level": "warning"}
        daemon = DaemonProcess(f"ipc://{tmp}/d.ipc", f"{tmp}/data", flags=flags,
                               log_path=f"{tmp}/daemon.log")
        daemon.start()
        opts = {**SpeedPlan(args.prompt, ((1, 1),), 2, 1).engine_options(),
                "cache_endpoint": daemon.endpoint, "max_num_seqs": 4, "num_gpu_blocks": blocks}
        writer, reader = LLM(str(model_dir), **opts), LLM(str(model_dir), **opts)
        try:
            return _ttft_cells(writer, reader, daemon, args)
        finally:
            writer.close()
            reader.close()
            daemon.stop()


def _ttft_cells(writer: Any, reader: Any, daemon: Any, args: argparse.Namespace
                ) -> dict[str, dict[str, float]]:
    from asymcache.engine.client import CacheClient
    from asymcache.engine.sampling import SamplingParams
    from asymcache.ops.bench._engine_speed import prompts as _prompts

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
    print(f"{'tokens/s (median of ' + str(r['rounds']) + ')':30}{'engine':>12}"
          f"{'transformers':>14}{'ratio':>8}")
    for row in r["throughput"]:
        what = (f"prefill {row['context']}" if row["kind"] == "prefill"
                else f"decode batch {row['batch']}, ctx {row['context']}")
        print(f"{what:30}{row['engine_tok_s']:>12,.0f}{row['transformers_tok_s']:>14,.0f}"
              f"{row['ratio']:>8.2f}")
    before, after = r["load_average_before"], r["load_average_after"]
    print(f"load average before {before[0]:.2f} {before[1]:.2f} {before[2]:.2f}, "
          f"after {after[0]:.2f} {after[1]:.2f} {after[2]:.2f}")
    if r["ttft_ms"] is None:
        return
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
