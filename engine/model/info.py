"""What the engine needs to know about a loaded model, and the KV pool that fits it."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asymcache.cacheserver.blocks import KVLayout

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` → float32 on CPU, bfloat16 on CUDA (float16 where bf16 is missing)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype {dtype} is not supported; use float32, bfloat16 or float16")
        return dtype
    if dtype is None or dtype == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in _DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; use one of {sorted(_DTYPES)} or auto")
    return _DTYPES[dtype]


def dtype_name(dtype: torch.dtype) -> str:
    """``torch.bfloat16`` → ``"bfloat16"`` (the spelling :class:`KVLayout` uses)."""
    return str(dtype).removeprefix("torch.")


@dataclass(frozen=True)
class ModelInfo:
    """The loaded model as the engine sees it.

    ``eos_token_ids`` joins ``config.json`` and ``generation_config.json``. ``max_positions`` is
    the longest context served exactly (capped by a sliding window, if any). ``dtype`` is the
    weight, activation and KV dtype. ``fingerprint`` is the 32-hex-digit identity of config and
    weights (see :mod:`asymcache.engine.model.fingerprint`).
    """

    model_type: str
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    vocab_size: int
    max_positions: int
    bos_token_id: int | None
    eos_token_ids: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    fingerprint: str

    def kv_layout(self, block_size: int) -> KVLayout:
        """The block layout of this model's KV: ``[num_layers, 2, block_size, Hkv, D]``."""
        return KVLayout(num_layers=self.num_layers, num_kv_heads=self.num_kv_heads,
                        head_dim=self.head_dim, block_size=block_size,
                        dtype=dtype_name(self.dtype))

    def kv_pool_shape(self, num_blocks: int, block_size: int) -> tuple[int, ...]:
        """``[num_blocks, num_layers, 2, block_size, Hkv, D]``: the engine's block-major pool."""
        return (num_blocks, *self.kv_layout(block_size).block_shape)


def allocate_kv_pool(info: ModelInfo, num_blocks: int, block_size: int = 16,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """A zero-filled KV pool for ``info`` on ``device`` (default: the model's), in its dtype.

    Shape ``[num_blocks, num_layers, 2, block_size, Hkv, D]``; block ``b`` is the contiguous
    ``pool[b]``, one block of :meth:`ModelInfo.kv_layout`. Memory: ``num_blocks`` times
    ``kv_layout(block_size).bytes_per_block``.
    """
    if not isinstance(num_blocks, int) or num_blocks <= 0:
        raise ValueError(f"num_blocks must be a positive int, got {num_blocks!r}")
    shape = info.kv_pool_shape(num_blocks, block_size)
    return torch.zeros(shape, dtype=info.dtype, device=device or info.device)
