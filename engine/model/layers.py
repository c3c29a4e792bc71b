"""Building blocks of the decoder: linear, RMSNorm, gated MLP and paged attention.

Parameters are allocated uninitialised (``torch.empty``) and filled by the loader, which copies
each checkpoint tensor into the view named by :meth:`checkpoint_targets`: q/k/v are stored fused
as one ``qkv`` matrix and gate/up as one ``gate_up`` matrix (fewer, larger GEMMs), and the
targets map each Hugging Face tensor name to its rows of the fused weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from asymcache.engine.model.config import ModelConfig
from asymcache.engine.model.gemm import linear, pack_weight
from asymcache.engine.model.rope import apply_rope
from asymcache.kernels.api import msa_decode, msa_prefill, write_kv
from asymcache.kernels.metadata import AttentionMetadata


def _param(shape: tuple[int, ...], device: torch.device, dtype: torch.dtype) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.empty(shape, device=device, dtype=dtype), requires_grad=False)


class Linear(torch.nn.Module):
    """``y = x @ W.T (+ b)`` with ``W [out, in]``; no initialisation (the loader fills it).

    After the weights are final, :meth:`pack` keeps a copy in oneDNN's layout for the CPU
    (see :mod:`asymcache.engine.model.gemm`); until then, and where packing does not apply,
    ``F.linear``.
    """

    def __init__(self, n_in: int, n_out: int, bias: bool, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = _param((n_out, n_in), device, dtype)
        self.bias = _param((n_out,), device, dtype) if bias else None
        self.packed: torch.Tensor | None = None

    def pack(self) -> None:
        """(Re)build the packed copy of the current weight (side effect: its memory)."""
        self.packed = pack_weight(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias, self.packed)

    def targets(self, names: list[str], sizes: list[int]) -> dict[str, torch.Tensor]:
        """Views of this layer's rows for each checkpoint name (``name.weight`` / ``.bias``)."""
        out: dict[str, torch.Tensor] = {}
        start = 0
        for name, size in zip(names, sizes, strict=True):
            out[f"{name}.weight"] = self.weight.data.narrow(0, start, size)
            if self.bias is not None:
                out[f"{name}.bias"] = self.bias.data.narrow(0, start, size)
            start += size
        return out


class RMSNorm(torch.nn.Module):
    """``w * x / sqrt(mean(x²) + eps)``, normalised in float32 and cast back before the scale."""

    def __init__(self, size: int, eps: float, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.weight = _param((size,), device, dtype)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float32:  # the same arithmetic in one fused op
            return F.rms_norm(x, self.weight.shape, self.weight, self.eps)
        x32 = x.to(torch.float32)
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class GatedMLP(torch.nn.Module):
    """SwiGLU feed-forward: ``down(silu(gate(x)) * up(x))``, ``[T, hidden] → [T, hidden]``."""

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        super().__init__()
        self.inner = cfg.intermediate_size
        self.gate_up = Linear(cfg.hidden_size, 2 * self.inner, cfg.mlp_bias, device, dtype)
        self.down = Linear(self.inner, cfg.hidden_size, cfg.mlp_bias, device, dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up.forward(x).split(self.inner, dim=-1)
        return self.down.forward(F.silu(gate) * up)

    def checkpoint_targets(self, prefix: str) -> dict[str, torch.Tensor]:
        names = [f"{prefix}.gate_proj", f"{prefix}.up_proj"]
        return {**self.gate_up.targets(names, [self.inner] * 2),
                **self.down.targets([f"{prefix}.down_proj"], [self.down.weight.shape[0]])}


@dataclass(frozen=True)
class StepContext:
    """What every layer reads during one forward step (built once per step, never global).

    ``cos``/``sin`` are ``[T, 1, head_dim]`` in the activation dtype; ``decode`` selects the
    one-query-per-sequence kernel; ``backend`` is passed to the kernels (resolved once per step).
    """

    meta: AttentionMetadata
    kv_pool: torch.Tensor
    cos: torch.Tensor
    sin: torch.Tensor
    decode: bool
    backend: str


class Attention(torch.nn.Module):
    """GQA self-attention over the paged KV pool.

    Projects ``x [T, hidden]`` to q/k/v, rotates q and k at ``meta.q_positions``, writes this
    step's K/V into the pool at ``meta.slot_mapping`` (side effect on ``kv_pool``), then attends
    over each sequence's block table with the mask ``kv_pos <= q_pos``.
    """

    def __init__(self, cfg: ModelConfig, layer: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.layer = layer
        self.num_heads, self.num_kv_heads, self.head_dim = (
            cfg.num_heads, cfg.num_kv_heads, cfg.head_dim)
        self.sizes = [cfg.num_heads * cfg.head_dim] + [cfg.num_kv_heads * cfg.head_dim] * 2
        self.scale = cfg.head_dim**-0.5
        self.qkv = Linear(cfg.hidden_size, sum(self.sizes), cfg.qkv_bias, device, dtype)
        self.o = Linear(self.sizes[0], cfg.hidden_size, cfg.o_bias, device, dtype)

    def forward(self, x: torch.Tensor, step: StepContext) -> torch.Tensor:
        tokens, heads = x.shape[0], self.num_heads
        qkv = self.qkv.forward(x)
        qk = qkv[:, : self.sizes[0] + self.sizes[1]].view(tokens, -1, self.head_dim)
        qk = apply_rope(qk, step.cos, step.sin)  # q and k rotated together: [T, Hq + Hkv, D]
        q, k = qk[:, :heads], qk[:, heads:]
        v = qkv[:, self.sizes[0] + self.sizes[1]:].view(tokens, self.num_kv_heads, self.head_dim)
        write_kv(step.kv_pool, self.layer, k, v, step.meta.slot_mapping, backend=step.backend)
        attend = msa_decode if step.decode else msa_prefill
        o = attend(q, step.kv_pool, self.layer, step.meta, self.scale, backend=step.backend)
        return self.o.forward(o.reshape(tokens, self.sizes[0]))

    def checkpoint_targets(self, prefix: str) -> dict[str, torch.Tensor]:
        names = [f"{prefix}.{p}_proj" for p in "qkv"]
        return {**self.qkv.targets(names, self.sizes),
                **self.o.targets([f"{prefix}.o_proj"], [self.o.weight.shape[0]])}
