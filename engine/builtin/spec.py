"""The built-in model's specification: shapes, special tokens, seed and weight scales.

Changing any value here changes the files, so it must come with a new ``version`` (the cache
folder is named after it) and a new pinned digest in ``tests/engine/test_builtin.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SPECIAL_TOKENS = ("<|bos|>", "<|eos|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>")
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('roles must be system, user or assistant') }}{% endif %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class BuiltinSpec:
    """A small Llama: 4 layers, 8 query heads over 2 KV heads (GQA), head dim 32, 2048 tokens.

    Weight scales (see :mod:`asymcache.engine.builtin.weights`): the embedding has unit variance;
    every
    projection preserves variance (``gain / sqrt(fan_in)``); ``qk_gain`` sharpens attention so
    that outputs depend strongly on context; ``lm_head_gain`` spreads the logits (std about
    ``lm_head_gain``); ``successor_weight`` is the share of the LM head given to the successor
    prior, which keeps top-1 margins large (see ``tests/engine/test_builtin_margins.py``).
    """

    version: str = "v2"
    seed: int = 20240611
    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2
    head_dim: int = 32
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    qk_gain: float = 1.5
    out_gain: float = 1.0
    lm_head_gain: float = 8.0
    successor_weight: float = 0.4

    @property
    def bos_token_id(self) -> int:
        return SPECIAL_TOKENS.index("<|bos|>")

    @property
    def eos_token_ids(self) -> list[int]:
        return [SPECIAL_TOKENS.index("<|eos|>"), SPECIAL_TOKENS.index("<|end|>")]

    def hf_config(self) -> dict[str, Any]:
        """``config.json`` of a ``LlamaForCausalLM`` (transformers can load the folder too)."""
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_layers, "num_attention_heads": self.num_heads,
            "num_key_value_heads": self.num_kv_heads, "head_dim": self.head_dim,
            "hidden_act": "silu", "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
            "tie_word_embeddings": False, "torch_dtype": "float32",
            "bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_ids,
            "asymcache_builtin": self.version,
        }

    def generation_config(self) -> dict[str, Any]:
        return {"bos_token_id": self.bos_token_id, "eos_token_id": self.eos_token_ids}

    def tokenizer_config(self) -> dict[str, Any]:
        """``tokenizer_config.json``: special tokens, chat template, a fast-tokenizer class."""
        return {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": "<|bos|>", "eos_token": "<|eos|>",
            "model_max_length": self.max_position_embeddings,
            "clean_up_tokenization_spaces": False,
            "chat_template": CHAT_TEMPLATE,
        }
