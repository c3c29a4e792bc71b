"""The model layer of the engine: Hugging Face folders in, one forward step per call out.

Public API (imported lazily, so ``asymcache.engine.model.config`` and the tokenizer work without
torch
kernels being imported)::

    from asymcache.engine.model import load_model, allocate_kv_pool, load_tokenizer

    model, info = load_model(model_dir, device="cpu", dtype=None)   # fp32 on CPU, bf16 on CUDA
    pool = allocate_kv_pool(info, num_blocks=256, block_size=16)   # [N, L, 2, B, Hkv, D]
    logits = model(input_ids, meta, pool, logits_indices)           # float32 [N or T, vocab]

* ``input_ids`` int64 ``[T]``: the step's query tokens of all sequences, packed as
  ``meta: kernels.AttentionMetadata`` describes (one per step, read by every layer; RoPE uses
  ``meta.q_positions``, so there is no separate positions argument). A step where
  ``meta.is_decode`` (one query per sequence, at ``kv_lens - 1``) runs the decode kernel;
  any other runs the multi-segment prefill kernel.
* Every layer writes the step's K/V into ``pool`` at ``meta.slot_mapping`` before attending;
  all other pool bytes are only read.
* ``info: ModelInfo`` has the shapes, EOS ids, ``max_positions``, dtype and ``fingerprint``
  (config + all weight bytes, see :mod:`asymcache.engine.model.fingerprint`); ``info.kv_layout(B)``
  is the
  ``asymcache.cacheserver.blocks.KVLayout`` for the namespace.
* ``load_tokenizer(model_dir)`` reads ``tokenizer.json`` (and the chat template) without
  transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "CausalLM": "asymcache.engine.model.llama",
    "ModelConfig": "asymcache.engine.model.config",
    "ModelInfo": "asymcache.engine.model.info",
    "Tokenizer": "asymcache.engine.model.tokenizer",
    "allocate_kv_pool": "asymcache.engine.model.info",
    "load_config": "asymcache.engine.model.config",
    "load_model": "asymcache.engine.model.loader",
    "load_tokenizer": "asymcache.engine.model.tokenizer",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asymcache.engine.model' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
