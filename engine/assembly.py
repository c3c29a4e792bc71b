"""Building an engine's parts from an :class:`EngineConfig`: model, tokenizer, KV pool sized to
the memory budget, cost model, daemon link, KV manager, runner and chunker."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.engine.chunking import Chunker, create_chunker
from asymcache.engine.config import EngineConfig
from asymcache.engine.kv_manager import KVManager
from asymcache.engine.kv_pool import KVPool
from asymcache.engine.runner import ModelRunner

if TYPE_CHECKING:
    from asymcache.cacheserver.protocol.sockets import ClientCurve
    from asymcache.engine.cache_link import CacheLink
    from asymcache.engine.lookup_mirror import LookupMirror

CPU_KV_BYTES = 256 << 20  # default pool on CPU: 256 MiB
CUDA_KV_FRACTION = 0.9  # default pool on CUDA: this share of the free memory after loading


@dataclass
class EngineParts:
    """Everything an :class:`asymcache.engine.engine.LLMEngine` runs on."""

    model: torch.nn.Module
    info: object  # engine.model.ModelInfo
    tokenizer: object  # engine.model.Tokenizer
    pool: KVPool
    kv: KVManager
    runner: ModelRunner
    chunker: Chunker
    cost: CostModel
    max_model_len: int


def build_parts(config: EngineConfig) -> EngineParts:
    """Load the model and tokenizer and assemble the engine (side effects: allocates the pool,
    may create the built-in model folder, connects to the daemon when configured)."""
    from asymcache.engine.builtin import resolve_model_dir
    from asymcache.engine.model import load_model, load_tokenizer

    if config.cpu_threads is not None and torch.device(config.device).type == "cpu":
        torch.set_num_threads(config.cpu_threads)  # process-wide, documented on the field
    model_dir = resolve_model_dir(config.model)
    model, info = load_model(model_dir, config.device, config.dtype, config.attn_backend)
    tokenizer = load_tokenizer(model_dir)
    layout = info.kv_layout(config.block_size)
    pool = KVPool(layout, num_pool_blocks(config, layout), info.device)
    cost = resolve_cost_model(config, model, pool)
    link = make_link(config, info.fingerprint, layout, pool.num_blocks)
    if link is not None:  # the daemon ranks this engine's blocks with its own costs
        link.cost_profile = cost.to_dict()
    kv = KVManager(pool, config.kv_config, info.fingerprint, cost, link)
    kv.tenancy.served_model = Path(config.model).name or config.model  # the HTTP server's name wins
    max_len = min(config.max_model_len or info.max_positions, info.max_positions)
    chunker = create_chunker(
        config.chunking, max_tokens=config.max_num_batched_tokens,
        chunk_tokens=config.chunk_tokens, cost=cost, target_step_s=config.target_step_s,
        min_prefill_tokens=config.min_prefill_tokens, calibrate=config.step_calibration,
        ttft_slo_s=config.ttft_slo_s, tpot_window=config.tpot_window)
    max_len = min(max_len, pool.num_blocks * config.block_size)
    return EngineParts(model, info, tokenizer, pool, kv, ModelRunner(model, pool), chunker, cost,
                       max_len)


def num_pool_blocks(config: EngineConfig, layout: KVLayout) -> int:
    """Slots of the pool: ``num_gpu_blocks``, else the byte budget over the block size."""
    if config.num_gpu_blocks is not None:
        return config.num_gpu_blocks
    budget = config.kv_cache_bytes
    if budget is None:
        device = torch.device(config.device)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            budget = int(free * CUDA_KV_FRACTION)
        else:
            budget = CPU_KV_BYTES
    blocks = budget // layout.bytes_per_block
    if blocks < 1:
        raise ValueError(f"kv_cache_bytes={budget} holds no block of "
                         f"{layout.bytes_per_block} bytes")
    return blocks


def resolve_cost_model(config: EngineConfig, model: torch.nn.Module, pool: KVPool) -> CostModel:
    """The configured preset or profile, or (``"auto"``) a quick measurement of this device."""
    if config.cost_model != "auto":
        return CostModel.resolve(config.cost_model)
    from asymcache.engine.profiler import QUICK, measure_cost_model

    return measure_cost_model(model, pool, QUICK)


def default_engine_id() -> str:
    """Host, process and a random suffix: unique even for two engines in one process (the
    daemon routes replies by engine id)."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def make_link(config: EngineConfig, fingerprint: str, layout: KVLayout,
              slots: int) -> CacheLink | None:
    """The daemon link when an endpoint is configured (and caching is on), else ``None``."""
    if config.cache_endpoint is None or config.reuse == "none":
        return None
    from asymcache.engine.cache_link import CacheLink

    curve = config.curve
    mirror = make_mirror(config, fingerprint, layout, curve)
    link = CacheLink(config.cache_endpoint, config.engine_id or default_engine_id(), fingerprint,
                     layout, slots, config.daemon_timeout_s, mirror, curve)
    link.client.pin_device = config.device  # the CPU tier, once mapped, is pinned for CUDA
    return link


def make_mirror(config: EngineConfig, fingerprint: str, layout: KVLayout,
                curve: ClientCurve | None = None) -> LookupMirror | None:
    """The LOOKUP mirror of the daemon's CPU and disk tiers when its events are configured: it
    follows the engine's namespace without a ``cache_salt``."""
    if not config.events_endpoint or not config.events_replay_endpoint:
        return None
    from asymcache.cacheserver.blocks import namespace_id
    from asymcache.engine.kv_events import EventSubscriber, topic_of
    from asymcache.engine.lookup_mirror import LookupMirror

    namespace = namespace_id(fingerprint, layout, "")
    sub = EventSubscriber(config.events_endpoint, config.events_replay_endpoint,
                          (topic_of(namespace),), curve=curve, timeout_s=config.daemon_timeout_s,
                          reask_s=0,
                          replay_at_start=False)
    return LookupMirror(sub, namespace, config.lookup_mirror_blocks)
