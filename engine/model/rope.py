"""Rotary position embedding: inverse frequencies per rope type, cos/sin per step, rotation.

Numerics follow the Hugging Face reference exactly (frequencies and angles in float32, cos/sin
cast to the activation dtype, "rotate half" pairing of dimension ``i`` with ``i + D/2``), so
that fp32 logits match transformers to rounding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from asymcache.engine.model.config import RopeConfig


def _default_inv_freq(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).to(dtype=torch.float) / head_dim
    return 1.0 / (rope.theta**exponents)


def _linear_inv_freq(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    return _default_inv_freq(rope, head_dim) / rope.factor


def _llama3_inv_freq(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """Llama 3.1: long wavelengths divided by ``factor``, short kept, a smooth ramp between."""
    inv_freq = _default_inv_freq(rope, head_dim)
    old_len = rope.original_max_positions
    low_freq_wavelen = old_len / rope.low_freq_factor
    high_freq_wavelen = old_len / rope.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / rope.factor, inv_freq)
    smooth = (old_len / wavelen - rope.low_freq_factor) / (
        rope.high_freq_factor - rope.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


INV_FREQ: dict[str, Callable[[RopeConfig, int], torch.Tensor]] = {
    "default": _default_inv_freq,
    "linear": _linear_inv_freq,
    "llama3": _llama3_inv_freq,
}


def inv_freq(rope: RopeConfig, head_dim: int) -> torch.Tensor:
    """Inverse frequencies, float32 ``[head_dim // 2]`` on the CPU."""
    return INV_FREQ[rope.kind](rope, head_dim)


class RotaryEmbedding(torch.nn.Module):
    """Holds the inverse frequencies (a float32 buffer) and turns positions into cos/sin.

    cos/sin of positions below ``TABLE_POSITIONS`` are kept in a table grown on demand (to the
    next power of two past the longest position seen, at most ``TABLE_POSITIONS`` rows: 16 MiB
    for head_dim 128 in float32), so a step looks its rows up instead of computing them.
    """

    TABLE_POSITIONS = 16384

    def __init__(self, rope: RopeConfig, head_dim: int, device: torch.device | str) -> None:
        super().__init__()
        self.register_buffer("inv_freq", inv_freq(rope, head_dim).to(device), persistent=False)
        self._table: tuple[torch.Tensor, torch.Tensor] | None = None

    def cos_sin(
        self, positions: torch.Tensor, dtype: torch.dtype, limit: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` int ``[T]`` → ``(cos, sin)``, each ``[T, 1, head_dim]`` in ``dtype``.

        ``sin`` has its first half negated (the sign of "rotate half" folded in, see
        :func:`apply_rope`). The middle axis broadcasts over heads. ``limit``, when given, is
        above every position (the step's longest KV): the table serves the lookup. Computed
        once per step, shared by all layers.
        """
        if limit is None or limit > self.TABLE_POSITIONS:
            cos, sin = self._compute(positions, dtype)
        else:
            cos, sin = (t.index_select(0, positions) for t in self._rows(limit, dtype))
        return cos[:, None, :], sin[:, None, :]

    def _rows(self, limit: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        table = self._table
        if table is None or table[0].shape[0] < limit or table[0].dtype != dtype:
            size = min(self.TABLE_POSITIONS, 1 << max(limit - 1, 1).bit_length())
            positions = torch.arange(size, device=self.inv_freq.device)
            table = self._table = self._compute(positions, dtype)
        return table

    def _compute(self, positions: torch.Tensor, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and signed sin ``[T, head_dim]`` (Hugging Face's float32 angles, then cast)."""
        angles = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        sin = angles.sin()
        sin[:, : sin.shape[1] // 2].neg_()
        return angles.cos().to(dtype), sin.to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate ``x [T, H, D]`` by per-token angles (``cos``/``sin`` from :meth:`cos_sin`).

    Hugging Face's ``x * cos + cat(-x2, x1) * sin`` with halves ``x1``, ``x2``: rolling ``x`` by
    ``D/2`` gives ``cat(x2, x1)`` and the sign lives in ``sin``, so the result is bit-identical
    with one copy fewer."""
    return x * cos + x.roll(x.shape[-1] // 2, dims=-1) * sin
