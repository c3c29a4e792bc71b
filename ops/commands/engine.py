"""``asymcache engine``: serve a model over an OpenAI-compatible HTTP API.

    asymcache engine --model DIR [--port P] [--cache-endpoint E] [--device D] [--dtype T]

Settings come from defaults < ``--config FILE`` (TOML) < ``ASYMCACHE_ENGINE_*`` environment
variables < flags, one ``--field-name VALUE`` per field of ``engine/config.py`` (see
``engine/settings.py`` and ``docs/engine.md``).
"""

from __future__ import annotations

import argparse

NAME = "engine"
HELP = "serve a model over an OpenAI-compatible HTTP API (/v1/completions, /metrics, ...)"

# help of the settings flags (a flag left out keeps the file/env/default value)
_HELP = {
    "model": "Hugging Face model folder, or 'builtin' (default)",
    "cache_endpoint": "cache daemon endpoint (ipc://... or tcp://...)",
    "device": "cpu (default) or cuda[:i]",
    "dtype": "float32, bfloat16 or float16 (default: by device)",
    "block_size": "tokens per KV block (default 16)",
    "num_gpu_blocks": "KV pool slots (default: from memory)",
    "kv_cache_bytes": "KV pool size, e.g. 256MiB",
    "max_model_len": "longest context (default: the model's)",
    "max_num_seqs": "most running requests",
    "max_waiting_requests": "requests waiting to start before new ones get 429",
    "max_num_batched_tokens": "most query tokens per step",
    "chunking": "adaptive (default) or fixed",
    "chunk_tokens": "tokens per step in fixed chunking",
    "target_step_s": "step-time (TPOT) objective, adaptive chunking",
    "tpot_window": "adaptive chunking: a decode may fall N-1 steps of --target-step-s "
                   "behind its pace (default 16; 1: every step within it)",
    "step_calibration": "adaptive chunking corrects the cost model by measured step times "
                        "(default true)",
    "ttft_slo_s": "adaptive chunking: a prefill waiting this long takes the whole step "
                  "(default 1; 0 never)",
    "cost_model": "cost preset, profile JSON path, or auto (default)",
    "reuse": "msa (default), prefix or none",
    "fetch_tiers": "comma list of the tiers to fetch from, out of cpu, disk and remote "
                   "(default: all three; '' for GPU-only reuse)",
    "write_through": "copy computed blocks to the CPU tier (default true)",
    "engine_id": "name of this engine at the daemon",
    "events_endpoint": "the daemon's KV events endpoint: with --events-replay-endpoint, LOOKUPs "
                       "that cannot find anything are not sent",
    "events_replay_endpoint": "the daemon's KV events replay endpoint",
    "lookup_mirror_blocks": "most blocks the LOOKUP mirror keeps (default 262144; size it to "
                            "the daemon's CPU slots plus disk blocks)",
    "max_retention_s": "longest prompt_cache_retention granted, seconds (0 = no cap; the API "
                       "keys file may set one per tenant)",
    "max_pin_ttl_s": "longest pin_ttl_s granted, seconds (0 = no cap; per tenant as above)",
    "api_keys_file": "JSON file mapping API keys to tenants and their cache_salt (or admin); "
                     "every /v1 request then needs 'Authorization: Bearer KEY' (default: none)",
    "attn_backend": "kernel backend: torch, triton or reference",
    "cpu_threads": "torch threads of a CPU engine (default: torch's)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from asymcache.cacheserver.config_loader import add_flags
    from asymcache.engine.settings import SCHEME

    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
    parser.add_argument("--served-model-name", help="model id clients use (default: folder)")
    parser.add_argument("--log-level", default="info", help="uvicorn and engine log level")
    add_flags(parser, SCHEME, _HELP)
    parser.add_argument("--no-write-through", dest="write_through", action="store_const",
                        const="false", help="the same as --write-through false")


def run(args: argparse.Namespace) -> int:
    import logging

    from asymcache.cacheserver.config_loader import given_flags
    from asymcache.engine.server.api_keys import KeyFileError
    from asymcache.engine.server.serve import serve
    from asymcache.engine.settings import SCHEME, load_settings

    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_settings(args.config, flags=given_flags(args, SCHEME))
    except ValueError as e:
        raise SystemExit(f"asymcache engine: {e}") from None
    try:
        return serve(config, args.host, args.port, args.served_model_name, args.log_level)
    except KeyFileError as e:
        raise SystemExit(f"asymcache engine: {e}") from None
