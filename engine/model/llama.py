"""The Llama-family decoder (Llama, Qwen2, Mistral share it; :class:`ModelConfig` says how).

One forward call is one engine step over a packed batch of query tokens from any number of
sequences, each with any segments (recomputed holes and the new suffix), against the paged KV
pool. Position information comes from ``meta.q_positions`` only, so RoPE and the causal mask can
never disagree.

Inside a step, submodules are called through ``.forward`` (no hooks are ever registered here):
on a CPU, ``Module.__call__`` around some forty small calls is a visible share of a decode step.
"""

from __future__ import annotations

import torch

from asymcache.engine.model.config import ModelConfig
from asymcache.engine.model.gemm import linear, pack_weight
from asymcache.engine.model.layers import Attention, GatedMLP, Linear, RMSNorm, StepContext
from asymcache.engine.model.rope import RotaryEmbedding
from asymcache.kernels.backends import default_backend_name
from asymcache.kernels.metadata import AttentionMetadata


class DecoderLayer(torch.nn.Module):
    """Pre-norm block: ``h += attn(norm(h)); h += mlp(norm(h))``."""

    def __init__(self, cfg: ModelConfig, layer: int, device: torch.device,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.input_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device, dtype)
        self.attn = Attention(cfg, layer, device, dtype)
        self.post_norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device, dtype)
        self.mlp = GatedMLP(cfg, device, dtype)

    def forward(self, h: torch.Tensor, step: StepContext) -> torch.Tensor:
        h = h + self.attn.forward(self.input_norm.forward(h), step)
        return h + self.mlp.forward(self.post_norm.forward(h))

    def checkpoint_targets(self, prefix: str) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.input_layernorm.weight": self.input_norm.weight.data,
            f"{prefix}.post_attention_layernorm.weight": self.post_norm.weight.data,
            **self.attn.checkpoint_targets(f"{prefix}.self_attn"),
            **self.mlp.checkpoint_targets(f"{prefix}.mlp"),
        }


class CausalLM(torch.nn.Module):
    """A decoder-only language model over a paged KV pool.

    Built with uninitialised weights on ``device`` in ``dtype``;
    :func:`asymcache.engine.model.load_model`
    fills them. ``attn_backend`` is handed to the kernels (``"torch"``, ``"triton"``,
    ``"reference"``, or None for automatic) and may be changed between steps.
    """

    def __init__(self, cfg: ModelConfig, device: torch.device | str, dtype: torch.dtype,
                 attn_backend: str | None = None) -> None:
        super().__init__()
        device = torch.device(device)
        self.config, self.dtype, self.attn_backend = cfg, dtype, attn_backend
        self.embed = torch.nn.Parameter(
            torch.empty((cfg.vocab_size, cfg.hidden_size), device=device, dtype=dtype),
            requires_grad=False)
        self.rotary = RotaryEmbedding(cfg.rope, cfg.head_dim, device)
        self.layers = torch.nn.ModuleList(
            DecoderLayer(cfg, i, device, dtype) for i in range(cfg.num_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, device, dtype)
        self.lm_head = None if cfg.tie_word_embeddings else Linear(
            cfg.hidden_size, cfg.vocab_size, False, device, dtype)
        self.tied_head_packed: torch.Tensor | None = None

    def pack_weights(self) -> None:
        """Pack every GEMM weight for the CPU (:mod:`asymcache.engine.model.gemm`); call once the
        weights
        are final (``load_model`` does). Side effect: a packed copy of each linear weight."""
        for module in self.modules():
            if isinstance(module, Linear):
                module.pack()
        if self.lm_head is None:
            self.tied_head_packed = pack_weight(self.embed)

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor, meta: AttentionMetadata, kv_pool: torch.Tensor,
                logits_indices: torch.Tensor | None = None) -> torch.Tensor:
        """Run one step; returns float32 logits ``[N, vocab]``.

        ``input_ids`` int64 ``[T]`` are the step's query tokens, packed as ``meta`` describes
        (positions from ``meta.q_positions``). ``kv_pool`` is the whole block-major pool
        ``[num_blocks, num_layers, 2, block_size, Hkv, D]`` in the model dtype; every layer writes
        this step's K/V into it at ``meta.slot_mapping`` (side effect). ``logits_indices`` int64
        ``[N]`` picks which rows of the step get logits (e.g. each sequence's last token); None
        means all ``T`` rows.
        """
        self._check_inputs(input_ids, meta, kv_pool)
        h = torch.nn.functional.embedding(input_ids, self.embed)
        cos, sin = self.rotary.cos_sin(meta.q_positions, h.dtype, meta.max_kv_len)
        backend = self.attn_backend or default_backend_name(kv_pool.device)  # once per step
        step = StepContext(meta, kv_pool, cos, sin, meta.is_decode, backend)
        for layer in self.layers:
            h = layer.forward(h, step)
        if logits_indices is not None:
            h = h.index_select(0, logits_indices)
        h = self.norm.forward(h)
        if self.lm_head is not None:
            return self.lm_head.forward(h).float()
        return linear(h, self.embed, None, self.tied_head_packed).float()

    def _check_inputs(self, input_ids: torch.Tensor, meta: AttentionMetadata,
                      kv_pool: torch.Tensor) -> None:
        cfg = self.config
        if input_ids.dim() != 1 or input_ids.numel() == 0:
            raise ValueError(
                f"input_ids must be a non-empty 1-D tensor, got {tuple(input_ids.shape)}")
        if meta.q_positions.shape != input_ids.shape:
            raise ValueError(
                f"meta.q_positions {tuple(meta.q_positions.shape)} must match input_ids "
                f"{tuple(input_ids.shape)}")
        want = (cfg.num_layers, 2, cfg.num_kv_heads, cfg.head_dim)
        got = (kv_pool.shape[1], kv_pool.shape[2], *kv_pool.shape[4:]) if kv_pool.dim() == 6 else ()
        if got != want or kv_pool.dtype != self.dtype:
            raise ValueError(
                f"kv_pool must be [num_blocks, {want[0]}, 2, block_size, {want[2]}, {want[3]}] "
                f"in {self.dtype}, got {tuple(kv_pool.shape)} in {kv_pool.dtype}")

    def checkpoint_targets(self) -> dict[str, torch.Tensor]:
        """Hugging Face tensor name → the (view of the) parameter it fills."""
        targets = {"model.embed_tokens.weight": self.embed.data,
                   "model.norm.weight": self.norm.weight.data}
        for i, layer in enumerate(self.layers):
            targets.update(layer.checkpoint_targets(f"model.layers.{i}"))
        if self.lm_head is not None:
            targets["lm_head.weight"] = self.lm_head.weight.data
        return targets
