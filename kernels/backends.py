"""Kernel backends: one abstract interface, implementations chosen by name through a registry.

* ``triton`` — the Triton kernels (compiled on CUDA; interpreter mode on CPU when
  ``TRITON_INTERPRET=1`` was set before the kernel modules were imported).
* ``torch`` — the fast CPU path: per-sequence block gather + ``scaled_dot_product_attention``.
* ``reference`` — the clear dense-mask torch reference, the oracle of every test.

``resolve_backend(None, device)`` picks ``triton`` on CUDA and ``torch`` elsewhere; the
``ASYMCACHE_KERNEL_BACKEND`` environment variable, read on every call, overrides that default;
an explicit name overrides both. Implementations are imported on first use, so ``import
kernels`` never imports Triton.
"""

from __future__ import annotations

import importlib
import os
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from asymcache.kernels.metadata import AttentionMetadata

ENV_VAR = "ASYMCACHE_KERNEL_BACKEND"

# name -> "module:ClassName"; adding a backend adds a line here and touches no caller.
BACKENDS: dict[str, str] = {
    "triton": "asymcache.kernels.triton_backend:TritonBackend",
    "torch": "asymcache.kernels.cpu:TorchBackend",
    "reference": "asymcache.kernels.reference:ReferenceBackend",
}


class Backend(ABC):
    """What every backend implements. Shapes and dtypes are those of ``asymcache.kernels.api``.

    Inputs reaching a backend are already validated by ``asymcache.kernels.api``; backends may
    assume
    matching devices, dtypes and shapes.
    """

    name: str

    @abstractmethod
    def write_kv(self, pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        """Scatter ``k``/``v`` ``[T, Hkv, D]`` into ``pool`` (in place); skip negative slots."""

    @abstractmethod
    def prefill(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                scale: float, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return ``o`` like ``q`` and, if ``return_lse``, the float32 natural-log LSE
        ``[T, Hq]`` (else ``None``)."""

    @abstractmethod
    def decode(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
               scale: float, num_splits: int | None,
               return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One query per sequence: ``o [S, Hq, D]`` and, if ``return_lse``, LSE ``[S, Hq]``.
        ``num_splits`` is the number of KV splits (``None``: the backend chooses)."""

    @abstractmethod
    def merge(self, o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
              lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Merge two partial results by their log-sum-exp."""


def default_backend_name(device: torch.device) -> str:
    """``ASYMCACHE_KERNEL_BACKEND`` if set, else ``triton`` on CUDA and ``torch`` elsewhere."""
    forced = os.environ.get(ENV_VAR, "").strip()
    if forced:
        return forced
    return "triton" if device.type == "cuda" else "torch"


def resolve_backend(name: str | None, device: torch.device) -> Backend:
    """The backend called ``name`` (or the default for ``device``), instantiated."""
    chosen = name if name is not None else default_backend_name(device)
    target = BACKENDS.get(chosen)
    if target is None:
        source = "backend" if name is not None else f"${ENV_VAR}"
        raise ValueError(f"unknown kernel {source} {chosen!r}; choose one of {sorted(BACKENDS)}")
    module_name, class_name = target.split(":")
    return getattr(importlib.import_module(module_name), class_name)()
