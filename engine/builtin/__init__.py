"""The built-in default model: a small Llama with seeded random weights and a real tokenizer.

``ensure_builtin_model()`` returns the folder ``~/.cache/asymcache/builtin-<version>``
(root overridable with ``ASYMCACHE_CACHE_DIR``), creating it deterministically on first use:
byte-identical files in every process and on every machine, for one ``tokenizers`` version (a
test pins their digest). It is a normal Hugging Face folder: load it with
``asymcache.engine.model.load_model`` (or transformers), and its tokenizer with
``asymcache.engine.model.load_tokenizer``. ``resolve_model_dir("builtin")`` does the same for a
``--model`` argument. Creating it needs no torch.

The model (:class:`BuiltinSpec`): 4 layers, hidden 256, 8 query / 2 KV heads of dim 32, FFN
768, vocabulary 2048 (byte-level BPE trained on ``engine/builtin/corpus``), 4.06 M parameters
(16 MB in float32). Weights are scaled so that attention depends strongly on context, and the
LM head carries a successor prior so that top-1 logit margins stay far above float32 noise (see
``engine/builtin/weights.py`` and ``tests/engine/test_builtin_margins.py``).
"""

from __future__ import annotations

from asymcache.engine.builtin.create import (
    default_cache_root,
    ensure_builtin_model,
    resolve_model_dir,
)
from asymcache.engine.builtin.spec import BuiltinSpec

__all__ = ["BuiltinSpec", "default_cache_root", "ensure_builtin_model", "resolve_model_dir"]
