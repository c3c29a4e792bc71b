"""The ``triton`` backend: wires the Triton launchers into the ``Backend`` interface.

Import this module (or call with ``backend="triton"``) only where Triton can run: on CUDA,
or on CPU with ``TRITON_INTERPRET=1`` set in the environment before the import.
"""

from __future__ import annotations

import os

import torch

from asymcache.kernels.backends import Backend
from asymcache.kernels.metadata import AttentionMetadata
from asymcache.kernels.triton_decode import msa_decode_triton
from asymcache.kernels.triton_merge import merge_state_triton
from asymcache.kernels.triton_prefill import msa_prefill_triton
from asymcache.kernels.triton_write_kv import write_kv_triton


def _check_runnable(x: torch.Tensor) -> None:
    if x.device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"the triton backend needs CUDA tensors (got {x.device}), or TRITON_INTERPRET=1 "
            "in the environment before the kernel modules are imported; on CPU use "
            "backend='torch'")


class TritonBackend(Backend):
    """Triton kernels with their default tile configurations."""

    name = "triton"

    def write_kv(self, pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        _check_runnable(pool)
        write_kv_triton(pool, layer, k, v, slot_mapping)

    def prefill(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                scale: float, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_runnable(q)
        return msa_prefill_triton(q, pool, layer, meta, scale, return_lse)

    def decode(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
               scale: float, num_splits: int | None,
               return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        _check_runnable(q)
        return msa_decode_triton(q, pool, layer, meta, scale, num_splits, return_lse)

    def merge(self, o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
              lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        _check_runnable(o_a)
        return merge_state_triton(o_a, lse_a, o_b, lse_b)
