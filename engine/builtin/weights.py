"""Seeded random weights for the built-in model, bit-identical on every machine.

Each tensor draws from its own PCG64 stream, seeded by BLAKE2b of ``(spec.seed, tensor name)``.
Values are uniform with the wanted standard deviation, built from the raw 64-bit outputs with
exact IEEE operations only (no library sampler, no transcendental function), so the bytes do not
depend on the NumPy version, the platform's libm or the order tensors are made in.

The LM head mixes a random matrix with a *successor prior*: row ``i`` also holds (scaled)
embedding row ``perm[i]`` for a fixed random permutation, so every token's own embedding,
present in the residual stream, pulls towards one successor. This makes the top-1 logit stand
clear of the rest far more often than with a purely random head (near-ties are about 8x rarer),
while attention still changes most greedy tokens when the context changes.
"""

from __future__ import annotations

import hashlib
import math

import numpy as np

from asymcache.engine.builtin.spec import BuiltinSpec


def uniform_tensor(seed: int, name: str, shape: tuple[int, ...], std: float) -> np.ndarray:
    """float32 ``shape`` uniform on ``[-std·√3, std·√3)`` (standard deviation ``std``)."""
    key = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    raw = np.random.PCG64(int.from_bytes(key, "little")).random_raw(math.prod(shape))
    unit = (raw >> np.uint64(11)).astype(np.float64) * 2.0**-53
    return ((2.0 * unit - 1.0) * (std * math.sqrt(3.0))).astype(np.float32).reshape(shape)


def permutation(seed: int, name: str, n: int) -> np.ndarray:
    """A fixed random permutation of ``range(n)`` (stable sort of raw PCG64 outputs)."""
    key = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    raw = np.random.PCG64(int.from_bytes(key, "little")).random_raw(n)
    return np.argsort(raw, kind="stable")


def _lm_head(spec: BuiltinSpec, embed: np.ndarray, random_head: np.ndarray) -> np.ndarray:
    """``w·prior + (1-w)·random`` with ``prior[i] = embed[perm[i]]`` at the random head's scale."""
    prior = embed[permutation(spec.seed, "lm_head.successor", spec.vocab_size)]
    prior = prior * (spec.lm_head_gain / math.sqrt(spec.hidden_size))
    w = spec.successor_weight
    return (w * prior + (1.0 - w) * random_head).astype(np.float32)


def _shapes_and_stds(spec: BuiltinSpec) -> dict[str, tuple[tuple[int, ...], float]]:
    """Checkpoint name → (shape, standard deviation); a std of 0 means "all ones" (norms)."""
    hidden, inner = spec.hidden_size, spec.intermediate_size
    q_out, kv_out = spec.num_heads * spec.head_dim, spec.num_kv_heads * spec.head_dim
    fan = 1.0 / math.sqrt(hidden)
    table: dict[str, tuple[tuple[int, ...], float]] = {
        "model.embed_tokens.weight": ((spec.vocab_size, hidden), 1.0),
        "model.norm.weight": ((hidden,), 0.0),
        "lm_head.weight": ((spec.vocab_size, hidden), spec.lm_head_gain * fan),
    }
    for i in range(spec.num_layers):
        p = f"model.layers.{i}"
        table.update({
            f"{p}.input_layernorm.weight": ((hidden,), 0.0),
            f"{p}.post_attention_layernorm.weight": ((hidden,), 0.0),
            f"{p}.self_attn.q_proj.weight": ((q_out, hidden), spec.qk_gain * fan),
            f"{p}.self_attn.k_proj.weight": ((kv_out, hidden), spec.qk_gain * fan),
            f"{p}.self_attn.v_proj.weight": ((kv_out, hidden), fan),
            f"{p}.self_attn.o_proj.weight": ((hidden, q_out), spec.out_gain / math.sqrt(q_out)),
            f"{p}.mlp.gate_proj.weight": ((inner, hidden), fan),
            f"{p}.mlp.up_proj.weight": ((inner, hidden), fan),
            f"{p}.mlp.down_proj.weight": ((hidden, inner), spec.out_gain / math.sqrt(inner)),
        })
    return table


def random_weights(spec: BuiltinSpec) -> dict[str, np.ndarray]:
    """Every tensor of the built-in ``LlamaForCausalLM`` checkpoint, float32, by HF name."""
    out: dict[str, np.ndarray] = {}
    for name, (shape, std) in sorted(_shapes_and_stds(spec).items()):
        if std == 0.0:
            out[name] = np.ones(shape, dtype=np.float32)
        else:
            out[name] = uniform_tensor(spec.seed, name, shape, std)
    out["lm_head.weight"] = _lm_head(spec, out["model.embed_tokens.weight"], out["lm_head.weight"])
    return out
