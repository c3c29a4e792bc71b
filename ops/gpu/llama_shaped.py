"""A Llama-3-8B-shaped model with random weights and clear top-1 margins, made on the device.

The GPU check's engine step (``ops/gpu/step_engine.py``) compares the engine with transformers
on the real widths of Llama-3-8B (hidden 4096, 32 query / 8 KV heads of 128, FFN 14336,
vocabulary 128256, RoPE theta 500000) and a few of its layers. :func:`write_model` makes the
weights on the device (seeded, in bfloat16 there) and writes an ordinary Hugging Face folder
that both load: ``config.json``, ``generation_config.json``, one ``model.safetensors``, and a
word-level tokenizer with one token per id (``<|bos|>``, ``<|eos|>``, ``t2`` ... ``t128255``),
so that every id the model can emit decodes.

Weights follow the built-in model's recipe (``engine/builtin/weights.py``): uniform values of a
chosen standard deviation, variance-preserving projections, sharpened attention (``qk_gain``),
and an LM head that adds a *successor prior* to a random head: row ``i`` also holds embedding
row ``perm[i]``, so the token in the residual stream pulls towards one successor. Here its scale
is ``successor / hidden`` (a successor logit of about ``successor`` times the embedding's share
of the final residual). Measured on the CPU in float32 at these widths with 4 layers (48 greedy
steps of 4 random prompts): with ``successor`` 72 the median top-1 margin is 5.4 and 23% of the
steps have one below 2, with 84 the median is 10.3 and 15% are below 2; changing two prompt
tokens changes 67% and 25% of the greedy tokens. 80 keeps most steps clear of bfloat16 noise
while attention still decides many tokens; ``ops/gpu/step_engine.py`` measures margins and noise
again on the device and compares tokens only where the margin is clear.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

BOS, EOS = "<|bos|>", "<|eos|>"


@dataclass(frozen=True)
class ShapedSpec:
    """Shapes, seed and weight scales of the model (defaults: Llama-3-8B widths, 4 layers)."""

    num_layers: int = 4
    hidden_size: int = 4096
    intermediate_size: int = 14336
    num_heads: int = 32
    num_kv_heads: int = 8
    head_dim: int = 128
    vocab_size: int = 128256
    rope_theta: float = 500000.0
    max_position_embeddings: int = 8192
    rms_norm_eps: float = 1e-5
    seed: int = 20
    qk_gain: float = 1.5
    out_gain: float = 1.0
    lm_head_gain: float = 8.0
    successor: float = 80.0

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "intermediate_size", "num_heads",
                     "num_kv_heads", "head_dim", "vocab_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"ShapedSpec.{name} must be positive")
        if self.num_heads % self.num_kv_heads:
            raise ValueError("ShapedSpec.num_heads must be a multiple of num_kv_heads")
        if self.vocab_size < 3:
            raise ValueError("ShapedSpec.vocab_size must leave room for BOS, EOS and a token")

    @classmethod
    def tiny(cls) -> ShapedSpec:
        """The same recipe at widths a CPU runs in seconds (the check's CPU rehearsal)."""
        return cls(num_layers=2, hidden_size=256, intermediate_size=512, num_heads=8,
                   num_kv_heads=2, head_dim=32, vocab_size=2048, max_position_embeddings=2048,
                   successor=24.0)

    @property
    def params(self) -> int:
        """Parameter count (norms included)."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, \
            self.num_kv_heads * self.head_dim
        layer = h * (2 * q + 2 * kv) + 3 * h * self.intermediate_size + 2 * h
        return 2 * self.vocab_size * h + h + self.num_layers * layer

    def hf_config(self, dtype: str) -> dict[str, Any]:
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps, "rope_theta": self.rope_theta,
            "rope_scaling": None, "attention_bias": False, "mlp_bias": False,
            "tie_word_embeddings": False, "torch_dtype": dtype, "bos_token_id": 0,
            "eos_token_id": 1, "asymcache_gpu_check": asdict(self),
        }


def _shapes_and_stds(spec: ShapedSpec) -> dict[str, tuple[tuple[int, ...], float]]:
    """Checkpoint name -> (shape, standard deviation); 0 means all ones (norms)."""
    h, inner = spec.hidden_size, spec.intermediate_size
    q_out, kv_out = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    fan = 1.0 / math.sqrt(h)
    table = {"model.embed_tokens.weight": ((spec.vocab_size, h), 1.0),
             "model.norm.weight": ((h,), 0.0),
             "lm_head.weight": ((spec.vocab_size, h), spec.lm_head_gain * fan)}
    for i in range(spec.num_layers):
        p = f"model.layers.{i}"
        table.update({
            f"{p}.input_layernorm.weight": ((h,), 0.0),
            f"{p}.post_attention_layernorm.weight": ((h,), 0.0),
            f"{p}.self_attn.q_proj.weight": ((q_out, h), spec.qk_gain * fan),
            f"{p}.self_attn.k_proj.weight": ((kv_out, h), spec.qk_gain * fan),
            f"{p}.self_attn.v_proj.weight": ((kv_out, h), fan),
            f"{p}.self_attn.o_proj.weight": ((h, q_out), spec.out_gain / math.sqrt(q_out)),
            f"{p}.mlp.gate_proj.weight": ((inner, h), fan),
            f"{p}.mlp.up_proj.weight": ((inner, h), fan),
            f"{p}.mlp.down_proj.weight": ((h, inner), spec.out_gain / math.sqrt(inner)),
        })
    return table


def _generator(spec: ShapedSpec, name: str, device: Any) -> Any:
    import torch

    key = hashlib.blake2b(f"{spec.seed}:{name}".encode(), digest_size=8).digest()
    return torch.Generator(device=device).manual_seed(int.from_bytes(key, "little") >> 1)


def make_weights(spec: ShapedSpec, device: Any, dtype: Any) -> dict[str, Any]:
    """Every tensor of the checkpoint on ``device`` in ``dtype`` (drawn in float32 there)."""
    import torch

    out: dict[str, torch.Tensor] = {}
    for name, (shape, std) in sorted(_shapes_and_stds(spec).items()):
        if std == 0.0:
            out[name] = torch.ones(shape, device=device, dtype=dtype)
            continue
        x = torch.rand(shape, generator=_generator(spec, name, device), device=device)
        out[name] = x.mul_(2.0).sub_(1.0).mul_(std * math.sqrt(3.0)).to(dtype)
        del x
    perm = torch.randperm(spec.vocab_size, generator=_generator(spec, "successor", device),
                          device=device)
    prior = out["model.embed_tokens.weight"][perm].float().mul_(spec.successor / spec.hidden_size)
    out["lm_head.weight"] = (out["lm_head.weight"].float() + prior).to(dtype)
    return out


def write_tokenizer(folder: Path, vocab_size: int) -> None:
    """A word-level tokenizer with one token per id (ids 0 and 1 are BOS and EOS)."""
    import tokenizers
    from tokenizers import models, pre_tokenizers

    vocab = {BOS: 0, EOS: 1} | {f"t{i}": i for i in range(2, vocab_size)}
    tok = tokenizers.Tokenizer(models.WordLevel(vocab, unk_token=EOS))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.add_special_tokens([BOS, EOS])
    tok.save(str(folder / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": EOS,
              "model_max_length": 1 << 20, "clean_up_tokenization_spaces": False}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def write_model(folder: str | Path, spec: ShapedSpec, device: Any = "cpu",
                dtype: str = "bfloat16") -> Path:
    """Write the model folder (created if absent); returns it. Side effects: about
    ``2 * params`` bytes on ``device`` while drawing, the same on disk for bfloat16."""
    import torch
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = make_weights(spec, torch.device(device), getattr(torch, dtype))
    save_file({k: v.cpu().contiguous() for k, v in weights.items()},
              str(folder / "model.safetensors"), metadata={"format": "pt"})
    del weights
    (folder / "config.json").write_text(json.dumps(spec.hf_config(dtype), indent=2) + "\n")
    (folder / "generation_config.json").write_text(
        json.dumps({"bos_token_id": 0, "eos_token_id": 1}) + "\n")
    write_tokenizer(folder, spec.vocab_size)
    return folder
