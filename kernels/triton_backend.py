"""The ``triton`` backend: wires the Triton launchers into the ``Backend`` interface.

Import this module (or call with ``backend="triton"``) only where Triton can run: on CUDA,
or on CPU with ``TRITON_INTERPRET=1`` set in the environment before the import.
"""

from __future__ import annotations

import torch

from kernels.backends import Backend
from kernels.metadata import AttentionMetadata
from kernels.triton_decode import msa_decode_triton
from kernels.triton_merge import merge_state_triton
from kernels.triton_prefill import msa_prefill_triton
from kernels.triton_write_kv import write_kv_triton


class TritonBackend(Backend):
    """Triton kernels with their default tile configurations."""

    name = "triton"

    def write_kv(self, pool: torch.Tensor, layer: int, k: torch.Tensor, v: torch.Tensor,
                 slot_mapping: torch.Tensor) -> None:
        write_kv_triton(pool, layer, k, v, slot_mapping)

    def prefill(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
                scale: float, return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return msa_prefill_triton(q, pool, layer, meta, scale, return_lse)

    def decode(self, q: torch.Tensor, pool: torch.Tensor, layer: int, meta: AttentionMetadata,
               scale: float, num_splits: int | None,
               return_lse: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        return msa_decode_triton(q, pool, layer, meta, scale, num_splits, return_lse)

    def merge(self, o_a: torch.Tensor, lse_a: torch.Tensor, o_b: torch.Tensor,
              lse_b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return merge_state_triton(o_a, lse_a, o_b, lse_b)
