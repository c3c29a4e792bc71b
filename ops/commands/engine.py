"""``asymcache engine``: serve a model over an OpenAI-compatible HTTP API.

    asymcache engine --model DIR [--port P] [--cache-endpoint E] [--device D] [--dtype T]

Settings come from ``--config FILE`` (TOML) < ``ASYMCACHE_ENGINE_*`` environment variables <
flags (see ``engine/settings.py`` and ``docs/engine.md``).
"""

from __future__ import annotations

import argparse

NAME = "engine"
HELP = "serve a model over an OpenAI-compatible HTTP API (/v1/completions, /metrics, ...)"

# flag -> (EngineConfig field, type, help); a flag left out keeps the file/env/default value
_FLAGS: dict[str, tuple[str, type, str]] = {
    "--model": ("model", str, "Hugging Face model folder, or 'builtin' (default)"),
    "--cache-endpoint": ("cache_endpoint", str, "cache daemon endpoint (ipc://... or tcp://...)"),
    "--device": ("device", str, "cpu (default) or cuda[:i]"),
    "--dtype": ("dtype", str, "float32, bfloat16 or float16 (default: by device)"),
    "--block-size": ("block_size", int, "tokens per KV block (default 16)"),
    "--num-gpu-blocks": ("num_gpu_blocks", int, "KV pool slots (default: from memory)"),
    "--kv-cache-bytes": ("kv_cache_bytes", int, "KV pool size in bytes"),
    "--max-model-len": ("max_model_len", int, "longest context (default: the model's)"),
    "--max-num-seqs": ("max_num_seqs", int, "most running requests"),
    "--max-waiting-requests": ("max_waiting_requests", int,
                               "requests waiting to start before new ones get 429"),
    "--max-num-batched-tokens": ("max_num_batched_tokens", int, "most query tokens per step"),
    "--chunking": ("chunking", str, "adaptive (default) or fixed"),
    "--chunk-tokens": ("chunk_tokens", int, "tokens per step in fixed chunking"),
    "--target-step-s": ("target_step_s", float, "step-time (TPOT) objective, adaptive chunking"),
    "--cost-model": ("cost_model", str, "cost preset, profile JSON path, or auto (default)"),
    "--reuse": ("reuse", str, "msa (default), prefix or none"),
    "--engine-id": ("engine_id", str, "name of this engine at the daemon"),
    "--attn-backend": ("attn_backend", str, "kernel backend: torch, triton or reference"),
    "--cpu-threads": ("cpu_threads", int, "torch threads of a CPU engine (default: torch's)"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML file with engine settings")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--served-model-name", help="model id clients use (default: folder)")
    parser.add_argument("--log-level", default="info", help="uvicorn and engine log level")
    for flag, (_, kind, text) in _FLAGS.items():
        parser.add_argument(flag, type=kind, help=text)
    parser.add_argument("--fetch-tiers", help="comma list of the tiers to fetch from, out of "
                        "cpu, disk and remote (default: all three; '' for GPU-only reuse)")
    parser.add_argument("--no-write-through", action="store_true",
                        help="do not copy computed blocks to the CPU tier")


def run(args: argparse.Namespace) -> int:
    import logging

    from asymcache.engine.server.serve import serve
    from asymcache.engine.settings import load_settings

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    flags = {field: getattr(args, flag[2:].replace("-", "_")) for flag, (field, _, _) in
             _FLAGS.items()}
    if args.fetch_tiers is not None:
        flags["fetch_tiers"] = tuple(t for t in args.fetch_tiers.split(",") if t)
    if args.no_write_through:
        flags["write_through"] = False
    try:
        config = load_settings(args.config, flags=flags)
    except ValueError as e:
        raise SystemExit(f"asymcache engine: {e}") from None
    return serve(config, args.host, args.port, args.served_model_name, args.log_level)
