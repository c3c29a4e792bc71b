"""Model runner: one step's batch → one ``AttentionMetadata`` → one forward pass → logits.

The plan is built once per step, here, and every layer reads it (no global context). Each
sequence contributes its query positions (recomputed holes and new tokens, or one decode
token); its KV length is its last query position + 1, so every earlier position is in the pool
(resident, fetched, computed in an earlier step, or written by this step's layers first); its
block table is the prefix of its slots that covers that length.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from asymcache.engine.kv_pool import KVPool
from asymcache.engine.scheduler import ScheduledSeq
from asymcache.kernels.metadata import AttentionMetadata


def build_metadata(batch: Sequence[ScheduledSeq], block_size: int, device: torch.device,
                   workspace: dict[str, torch.Tensor] | None = None) -> AttentionMetadata:
    """The step's metadata (DESIGN.md §7) from each scheduled sequence's positions and slots;
    ``workspace``: the kernels' buffers, reused across steps (see ``AttentionMetadata``)."""
    kv_lens = [s.positions[-1] + 1 for s in batch]
    tables = [s.request.slots[: -(-n // block_size)] for s, n in zip(batch, kv_lens, strict=True)]
    if all(s.decode for s in batch):  # one query at kv_len - 1 each: the cheaper constructor
        return AttentionMetadata.for_decode(kv_lens, tables, block_size, device, workspace)
    positions = [s.positions for s in batch]
    return AttentionMetadata.for_sequences(positions, kv_lens, tables, block_size, device,
                                           workspace)


class ModelRunner:
    """Runs the model over the KV pool; sampling stays with the caller."""

    def __init__(self, model: torch.nn.Module, pool: KVPool) -> None:
        self.model = model
        self.pool = pool
        self.device = pool.device
        self.block_size = pool.layout.block_size
        self.workspace: dict[str, torch.Tensor] = {}  # the kernels' buffers, kept across steps

    def launch(self, batch: Sequence[ScheduledSeq]) -> torch.Tensor:
        """Queue the forward pass of ``batch``; returns float32 logits ``[N, vocab]``, one row
        per sequence with ``sample`` set, in batch order (asynchronous on CUDA)."""
        if not batch:
            raise ValueError("launch needs at least one scheduled sequence")
        meta = build_metadata(batch, self.block_size, self.device, self.workspace)
        ids: list[int] = []
        rows: list[int] = []
        for s in batch:
            ids.extend(s.request.tokens_at(s.positions))
            if s.sample:
                rows.append(len(ids) - 1)
        input_ids = torch.tensor(ids, dtype=torch.int64, device=self.device)
        index = torch.tensor(rows, dtype=torch.int64, device=self.device)
        self.pool.wait_for_copies()
        logits = self.model(input_ids, meta, self.pool.tensor, index)
        self.pool.mark_compute()
        return logits
