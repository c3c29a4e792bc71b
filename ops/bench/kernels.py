"""``asymcache bench kernels``: the MSA kernels against SDPA on contiguous KV, side by side.

Three experiments on one sequence shape (defaults: Llama-3-8B heads, 32 query / 8 KV heads of
128, from ``REFERENCE_NUMBERS.md``), over a paged pool whose block tables are shuffled:

1. **prefill** — every token of a sequence (one segment) through ``msa_prefill`` against SDPA
   with ``is_causal`` on contiguous K/V, at equal work (FLOPs counted exactly,
   ``4·Hq·D·Σ(q_pos+1)``); on CUDA also FlashInfer's single-request prefill if installed.
2. **segments** — the same number of query tokens in 1, 8 and 32 segments spread over one
   context; the overhead is time per FLOP against one segment; masked SDPA alongside.
3. **decode** — ``S`` sequences of ``L`` tokens through ``msa_decode`` against SDPA on
   contiguous K/V; KV bytes read per second and, on CUDA, the fraction of the device's memory
   bandwidth.

On CPU this measures the torch path (what the engine runs there); on CUDA the Triton kernels
and SDPA's flash backend. Prints tables, writes JSON (``--out``) and, with ``--plot``, a PNG.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

NAME = "kernels"
HELP = "MSA prefill/decode against SDPA on contiguous KV (torch path on CPU, Triton on CUDA)"

# GB/s, from the GPU table of REFERENCE_NUMBERS.md (HBM bandwidth column).
PEAK_BANDWIDTH_GBS = {"H100": 3350.0, "H20": 4000.0, "A100": 2000.0}
DEFAULTS = {  # CPU sizes stay small: two shared cores
    "cpu": {"prefill": "512,1024", "context": 2048, "tokens": 512, "batch": 8,
            "decode": "1024,4096"},
    "cuda": {"prefill": "1024,4096,16384", "context": 16384, "tokens": 4096, "batch": 32,
             "decode": "4096,32768"},
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--heads", type=int, default=32, help="query heads (default 32)")
    parser.add_argument("--kv-heads", type=int, default=8, help="KV heads (default 8)")
    parser.add_argument("--head-dim", type=int, default=128)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                        help="default: bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--prefill-lengths", help="comma-separated sequence lengths")
    parser.add_argument("--segment-context", type=int, help="context of the segment experiment")
    parser.add_argument("--segment-tokens", type=int, help="query tokens, split into segments")
    parser.add_argument("--segments", default="1,8,32", help="segment counts (default 1,8,32)")
    parser.add_argument("--decode-batch", type=int, help="sequences per decode step")
    parser.add_argument("--decode-lengths", help="comma-separated KV lengths for decode")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per figure (median)")
    parser.add_argument("--peak-bandwidth", type=float, help="device memory GB/s (CUDA)")
    parser.add_argument("--out", default="out/bench/kernels.json", help="JSON result path")
    parser.add_argument("--plot", action="store_true", help="also write a PNG next to the JSON")


def run(args: argparse.Namespace) -> int:
    import torch

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    defaults = DEFAULTS[device.type]
    dtype = getattr(torch, args.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    if args.heads % args.kv_heads:
        print("--heads must be a multiple of --kv-heads", file=sys.stderr)
        return 2
    bench = _Bench(args, device, dtype)
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "backend": bench.backend, "dtype": str(dtype).removeprefix("torch."),
        "heads": args.heads, "kv_heads": args.kv_heads, "head_dim": args.head_dim,
        "block_size": args.block_size, "threads": torch.get_num_threads(),
        "prefill": [bench.prefill(n) for n in _ints(args.prefill_lengths or defaults["prefill"])],
        "segments": bench.segments(args.segment_context or defaults["context"],
                                   args.segment_tokens or defaults["tokens"],
                                   _ints(args.segments)),
        "decode": [bench.decode(args.decode_batch or defaults["batch"], n)
                   for n in _ints(args.decode_lengths or defaults["decode"])],
    }
    _print_tables(results)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwrote {out}")
    if args.plot:
        print(f"wrote {_plot(results, out.with_suffix('.png'))}")
    return 0


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) <= 0:
        raise SystemExit(f"expected positive integers, got {text!r}")
    return values


class _Bench:
    """Builds paged workloads and times the kernels against SDPA on one device."""

    def __init__(self, args: argparse.Namespace, device, dtype) -> None:
        import torch

        self.args, self.device, self.dtype = args, device, dtype
        self.backend = "triton" if device.type == "cuda" else "torch"
        self.scale = 1.0 / math.sqrt(args.head_dim)
        self.gen = torch.Generator().manual_seed(0)
        self.peak = args.peak_bandwidth or _peak_bandwidth(device)

    def _seconds(self, fn) -> float:
        if self.device.type == "cuda":
            import triton.testing

            return triton.testing.do_bench(fn, return_mode="median") / 1e3
        fn()  # warm-up
        times = []
        for _ in range(self.args.repeat):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    def _randn(self, *shape):
        import torch

        return torch.randn(shape, generator=self.gen).to(self.dtype).to(self.device)

    def _workload(self, positions: list[list[int]], kv_lens: list[int]):
        """``(q, pool, meta, contiguous K and V per sequence [Hkv, L, D])``."""
        import torch

        from asymcache.kernels.metadata import AttentionMetadata

        a, b = self.args, self.args.block_size
        counts = [-(-n // b) for n in kv_lens]
        pool = self._randn(sum(counts), 1, 2, b, a.kv_heads, a.head_dim)
        order = torch.randperm(sum(counts), generator=self.gen).tolist()
        tables = [order[sum(counts[:i]):sum(counts[:i + 1])] for i in range(len(counts))]
        meta = AttentionMetadata.for_sequences(positions, kv_lens, tables, b, self.device)
        kv = [pool[torch.tensor(t, device=self.device), 0].transpose(0, 1).flatten(1, 2)[:, :n]
              .transpose(1, 2).contiguous() for t, n in zip(tables, kv_lens, strict=True)]
        q = self._randn(meta.num_tokens, a.heads, a.head_dim)
        return q, pool, meta, kv

    def _heads(self, kv):
        """``[1, Hkv, L, D]`` as SDPA gets it: as is on CPU (``enable_gqa``), repeated to
        ``Hq`` heads on CUDA, where not every SDPA backend takes GQA (untimed)."""
        if self.device.type != "cuda":
            return kv
        return kv.repeat_interleave(self.args.heads // self.args.kv_heads, dim=1)

    def _flops(self, positions: list[int]) -> float:
        return 4.0 * self.args.heads * self.args.head_dim * sum(p + 1 for p in positions)

    def prefill(self, length: int) -> dict:
        from asymcache.kernels.api import msa_prefill

        _log(f"prefill {length} tokens")
        q, pool, meta, kv = self._workload([list(range(length))], [length])
        q4 = q.transpose(0, 1)[None]
        k4, v4 = (self._heads(x[None]) for x in kv[0])
        row = {"tokens": length, "flops": self._flops(range(length)),
               "msa_s": self._seconds(lambda: msa_prefill(q, pool, 0, meta, self.scale,
                                                          backend=self.backend)),
               "sdpa_s": self._seconds(lambda: _sdpa(q4, k4, v4, self.scale, causal=True))}
        flashinfer = _flashinfer_prefill(q, kv[0])
        if flashinfer is not None:
            row["flashinfer_s"] = self._seconds(flashinfer)
        return row

    def segments(self, context: int, tokens: int, counts: list[int]) -> list[dict]:
        return [self._segment_row(context, tokens, count) for count in counts]

    def _segment_row(self, context: int, tokens: int, count: int) -> dict:
        import torch

        from asymcache.kernels.api import msa_prefill

        _log(f"segments: {tokens} query tokens in {count} segments over {context}")
        run = max(1, tokens // count)
        positions = sorted({p for i in range(count)
                            for p in range(context * (i + 1) // count - run,
                                           context * (i + 1) // count)})
        q, pool, meta, kv = self._workload([positions], [context])
        mask = (torch.arange(context, device=self.device)[None, :]
                <= meta.q_positions[:, None].long())
        q4, (k4, v4) = q.transpose(0, 1)[None], (self._heads(x[None]) for x in kv[0])
        return {"segments": count, "tokens": len(positions), "context": context,
                "flops": self._flops(positions),
                "msa_s": self._seconds(lambda: msa_prefill(q, pool, 0, meta, self.scale,
                                                           backend=self.backend)),
                "sdpa_masked_s": self._seconds(lambda: _sdpa(q4, k4, v4, self.scale,
                                                             mask=mask))}

    def decode(self, batch: int, length: int) -> dict:
        import torch

        from asymcache.kernels.api import msa_decode

        _log(f"decode {batch} x {length}")
        q, pool, meta, kv = self._workload([[length - 1]] * batch, [length] * batch)
        group = self.args.heads // self.args.kv_heads
        q4 = q.view(batch, self.args.kv_heads, group, self.args.head_dim)
        k4, v4 = torch.stack([k for k, _ in kv]), torch.stack([v for _, v in kv])
        return {"batch": batch, "kv_len": length, "kv_bytes": 2 * k4.numel() * k4.element_size(),
                "msa_s": self._seconds(lambda: msa_decode(q, pool, 0, meta, self.scale,
                                                          backend=self.backend)),
                "sdpa_s": self._seconds(lambda: _sdpa(q4, k4, v4, self.scale)),
                "peak_gbs": self.peak}


def _sdpa(q, k, v, scale: float, causal: bool = False, mask=None):
    """SDPA on contiguous tensors; the flash backend on CUDA when no mask is given."""
    import torch
    import torch.nn.functional as F

    gqa = q.shape[1] != k.shape[1]
    if q.device.type == "cuda" and mask is None:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale,
                                                  enable_gqa=gqa)
    with torch.no_grad():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal,
                                              scale=scale, enable_gqa=gqa)


def _flashinfer_prefill(q, kv):
    """FlashInfer's causal single-request prefill on contiguous K/V, or None without it."""
    if q.device.type != "cuda":
        return None
    try:
        import flashinfer
    except ImportError:
        return None
    k, v = (x.transpose(0, 1).contiguous() for x in kv)  # [L, Hkv, D] (NHD)
    return lambda: flashinfer.single_prefill_with_kv_cache(q, k, v, causal=True)


def _peak_bandwidth(device) -> float | None:
    if device.type != "cuda":
        return None
    import torch

    name = torch.cuda.get_device_name(device)
    return next((gbs for key, gbs in PEAK_BANDWIDTH_GBS.items() if key in name), None)


def _log(message: str) -> None:
    print(f"[bench kernels] {message}", file=sys.stderr, flush=True)


def _print_tables(r: dict) -> None:
    unit = 1e12 if r["backend"] == "triton" else 1e9
    tag = "TFLOP/s" if unit == 1e12 else "GFLOP/s"
    print(f"\nMSA kernels — {r['device']}, backend {r['backend']}, {r['dtype']}, "
          f"{r['heads']}/{r['kv_heads']} heads x {r['head_dim']}, block {r['block_size']}")
    print(f"\nprefill (one segment)   {'tokens':>7} {'msa ms':>9} {'sdpa ms':>9} "
          f"{'msa ' + tag:>13} {'sdpa ' + tag:>13} {'msa/sdpa':>9}")
    for p in r["prefill"]:
        fi = (f"   flashinfer {p['flops'] / p['flashinfer_s'] / unit:.1f}"
              if "flashinfer_s" in p else "")
        print(f"{'':24}{p['tokens']:>7} {p['msa_s'] * 1e3:>9.2f} {p['sdpa_s'] * 1e3:>9.2f} "
              f"{p['flops'] / p['msa_s'] / unit:>13.1f} {p['flops'] / p['sdpa_s'] / unit:>13.1f} "
              f"{p['sdpa_s'] / p['msa_s']:>8.0%}{fi}")
    base = r["segments"][0]["msa_s"] / r["segments"][0]["flops"]
    print(f"\nsegments (equal tokens) {'segs':>7} {'tokens':>7} {'msa ms':>9} {'msa ' + tag:>13} "
          f"{'overhead':>9} {'masked sdpa ms':>15}")
    for s in r["segments"]:
        over = s["msa_s"] / s["flops"] / base - 1
        print(f"{'':24}{s['segments']:>7} {s['tokens']:>7} {s['msa_s'] * 1e3:>9.2f} "
              f"{s['flops'] / s['msa_s'] / unit:>13.1f} {over:>+9.1%} "
              f"{s['sdpa_masked_s'] * 1e3:>15.2f}")
    print(f"\ndecode                  {'batch':>7} {'kv_len':>7} {'msa ms':>9} {'sdpa ms':>9} "
          f"{'msa GB/s':>9} {'sdpa GB/s':>10} {'of peak':>8}")
    for d in r["decode"]:
        gbs = d["kv_bytes"] / d["msa_s"] / 1e9
        peak = f"{gbs / d['peak_gbs']:>8.0%}" if d["peak_gbs"] else f"{'n/a':>8}"
        print(f"{'':24}{d['batch']:>7} {d['kv_len']:>7} {d['msa_s'] * 1e3:>9.2f} "
              f"{d['sdpa_s'] * 1e3:>9.2f} {gbs:>9.1f} {d['kv_bytes'] / d['sdpa_s'] / 1e9:>10.1f} "
              f"{peak}")


def _plot(r: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    labels = [str(p["tokens"]) for p in r["prefill"]]
    for offset, key in ((-0.2, "msa_s"), (0.2, "sdpa_s")):
        axes[0].bar([i + offset for i in range(len(labels))],
                    [p["flops"] / p[key] / 1e9 for p in r["prefill"]], 0.4, label=key[:-2])
    axes[0].set(xticks=range(len(labels)), xticklabels=labels, xlabel="tokens",
                ylabel="GFLOP/s", title="prefill, one segment")
    axes[0].legend()
    segs = r["segments"]
    axes[1].plot([s["segments"] for s in segs],
                 [s["flops"] / s["msa_s"] / 1e9 for s in segs], marker="o")
    axes[1].set(xscale="log", xlabel="segments", ylabel="GFLOP/s", title="equal query tokens")
    dec = r["decode"]
    for key in ("msa_s", "sdpa_s"):
        axes[2].plot([d["kv_len"] for d in dec], [d["kv_bytes"] / d[key] / 1e9 for d in dec],
                     marker="o", label=key[:-2])
    axes[2].set(xscale="log", xlabel="KV length", ylabel="GB/s", title="decode")
    axes[2].legend()
    fig.suptitle(f"MSA kernels — {r['device']} ({r['backend']}, {r['dtype']})")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
