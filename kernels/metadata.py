"""``AttentionMetadata``: the one object the engine builds per step and every layer reads.

DESIGN.md section 7 fixes the fields. Construction validates them once, on the host, and
caches the host-side values that launchers need (number of sequences, longest query run,
longest KV, ...), so that per-layer kernel calls never read device memory from the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch


@dataclass(frozen=True, eq=False)
class AttentionMetadata:
    """Where each query token sits and where each sequence's KV lives in the pool.

    Fields (all on one device):

    * ``cu_seqlens_q`` int32 ``[S+1]``: offsets of each sequence's query tokens in the packed
      ``q``; starts at 0, non-decreasing, ends at ``T``.
    * ``q_positions`` int32 ``[T]``: absolute position of each query token, strictly ascending
      within a sequence, any number of segments, and below the sequence's ``kv_lens``.
    * ``kv_lens`` int32 ``[S]``: logical KV length of each sequence; positions ``[0, kv_len)``
      are in the pool when attention runs (their K/V written first when computed this step).
    * ``block_tables`` int32 ``[S, max_blocks]``: physical block ids in logical order, ``-1``
      padding after a sequence's blocks.
    * ``slot_mapping`` int64 ``[T]``: ``block_id * block_size + offset`` of each query token's
      K/V for ``write_kv``; a negative slot means "do not write"; non-negative slots are unique.

    Query token ``t`` of sequence ``s`` attends to KV positions ``j < kv_lens[s]`` with
    ``j <= q_positions[t]``. Derived host values (``num_seqs``, ``num_tokens``, ``max_q_len``,
    ``max_kv_len``, ``min_block_size``, ``max_block_id``, ``is_decode``, the per-sequence
    tuples ``host_cu_seqlens``, ``host_kv_lens``, ``contiguous_suffix`` and the CPU int64 copy
    ``host_q_positions``) are computed here once.
    Construction reads the fields back to the host once (one device sync per step on CUDA).
    Raises ``ValueError`` naming the field that is wrong. ``scratch`` is a per-step workspace
    that CPU kernels reuse across layers (gather buffers); it never carries data between calls
    and is freed with the metadata.
    """

    cu_seqlens_q: torch.Tensor
    q_positions: torch.Tensor
    kv_lens: torch.Tensor
    block_tables: torch.Tensor
    slot_mapping: torch.Tensor
    num_seqs: int = field(init=False)
    num_tokens: int = field(init=False)
    max_q_len: int = field(init=False)
    max_kv_len: int = field(init=False)
    min_block_size: int = field(init=False)
    max_block_id: int = field(init=False)
    is_decode: bool = field(init=False)
    host_cu_seqlens: tuple[int, ...] = field(init=False, repr=False)
    host_kv_lens: tuple[int, ...] = field(init=False, repr=False)
    host_q_positions: torch.Tensor = field(init=False, repr=False)
    contiguous_suffix: tuple[bool, ...] = field(init=False, repr=False)
    scratch: dict[str, torch.Tensor] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        _check_tensor("cu_seqlens_q", self.cu_seqlens_q, torch.int32, 1)
        _check_tensor("q_positions", self.q_positions, torch.int32, 1)
        _check_tensor("kv_lens", self.kv_lens, torch.int32, 1)
        _check_tensor("block_tables", self.block_tables, torch.int32, 2)
        _check_tensor("slot_mapping", self.slot_mapping, torch.int64, 1)
        devices = {t.device for t in (self.cu_seqlens_q, self.q_positions, self.kv_lens,
                                      self.block_tables, self.slot_mapping)}
        if len(devices) != 1:
            raise ValueError(f"AttentionMetadata fields must share one device, got {devices}")
        cu, pos, kv, table, slots = (t.detach().cpu().long() for t in (
            self.cu_seqlens_q, self.q_positions, self.kv_lens, self.block_tables,
            self.slot_mapping))
        q_lens = _check_offsets(cu, pos, kv, table, slots)
        _check_positions(cu, pos, kv, q_lens)
        _check_tables_and_slots(table, slots, kv)
        first = pos[cu[:-1].clamp(max=max(len(pos) - 1, 0))] if len(pos) else q_lens
        suffix = (q_lens > 0) & (first == kv - q_lens)
        derived = {
            "num_seqs": len(kv),
            "num_tokens": len(pos),
            "max_q_len": int(q_lens.max()) if len(kv) else 0,
            "max_kv_len": int(kv.max()) if len(kv) else 0,
            "min_block_size": _min_block_size(table, kv),
            "max_block_id": int(table.max()) if table.numel() else -1,
            "is_decode": bool((q_lens == 1).all() and suffix.all()),
            "host_cu_seqlens": tuple(cu.tolist()),
            "host_kv_lens": tuple(kv.tolist()),
            "host_q_positions": pos,
            "contiguous_suffix": tuple(suffix.tolist()),
        }
        for name, value in derived.items():
            object.__setattr__(self, name, value)

    @property
    def device(self) -> torch.device:
        return self.q_positions.device

    @classmethod
    def for_sequences(
        cls,
        positions: Sequence[Sequence[int]],
        kv_lens: Sequence[int],
        block_tables: Sequence[Sequence[int]],
        block_size: int,
        device: torch.device | str = "cpu",
    ) -> AttentionMetadata:
        """Build the metadata from Python lists (tests, tools, small engines).

        ``positions[s]`` are sequence ``s``'s query positions; ``block_tables[s]`` its physical
        block ids in logical order (rows are padded with ``-1``). ``slot_mapping`` is derived:
        each query token's K/V goes to the slot of its position in its sequence's table.
        """
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if not len(positions) == len(kv_lens) == len(block_tables):
            raise ValueError(f"positions, kv_lens and block_tables must have one entry per "
                             f"sequence, got {len(positions)}, {len(kv_lens)}, "
                             f"{len(block_tables)}")
        width = max((len(row) for row in block_tables), default=0)
        table = [list(row) + [-1] * (width - len(row)) for row in block_tables]
        flat = [p for run in positions for p in run]
        slots = []
        for s, run in enumerate(positions):
            for p in run:
                if p // block_size >= len(block_tables[s]):
                    raise ValueError(f"position {p} of sequence {s} is past its block table")
                slots.append(block_tables[s][p // block_size] * block_size + p % block_size)
        cu = [0]
        for run in positions:
            cu.append(cu[-1] + len(run))
        i32 = {"dtype": torch.int32, "device": device}
        return cls(
            cu_seqlens_q=torch.tensor(cu, **i32),
            q_positions=torch.tensor(flat, **i32),
            kv_lens=torch.tensor(list(kv_lens), **i32),
            block_tables=torch.tensor(table, **i32).reshape(len(block_tables), width),
            slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        )


def _check_tensor(name: str, t: object, dtype: torch.dtype, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"AttentionMetadata.{name} must be a torch.Tensor, got {type(t)}")
    if t.dtype != dtype or t.dim() != ndim:
        raise ValueError(
            f"AttentionMetadata.{name} must be {dtype} with {ndim} dim(s), "
            f"got {t.dtype} of shape {tuple(t.shape)}"
        )


def _check_offsets(cu, pos, kv, table, slots) -> torch.Tensor:
    num_seqs = len(cu) - 1
    if num_seqs < 0 or int(cu[0]) != 0:
        raise ValueError("AttentionMetadata.cu_seqlens_q must have S+1 >= 1 entries, starting at 0")
    q_lens = cu[1:] - cu[:-1]
    if (q_lens < 0).any():
        raise ValueError("AttentionMetadata.cu_seqlens_q must be non-decreasing")
    if int(cu[-1]) != len(pos):
        raise ValueError(
            f"AttentionMetadata.cu_seqlens_q ends at {int(cu[-1])} but q_positions has "
            f"{len(pos)} tokens"
        )
    if len(slots) != len(pos):
        raise ValueError(
            f"AttentionMetadata.slot_mapping has {len(slots)} entries, want {len(pos)}")
    if len(kv) != num_seqs or table.shape[0] != num_seqs:
        raise ValueError(
            f"AttentionMetadata.kv_lens {tuple(kv.shape)} and block_tables {tuple(table.shape)} "
            f"must have S={num_seqs} rows"
        )
    if (kv < 0).any():
        raise ValueError("AttentionMetadata.kv_lens must be >= 0")
    return q_lens


def _check_positions(cu, pos, kv, q_lens) -> None:
    if not len(pos):
        return
    seq = torch.repeat_interleave(torch.arange(len(q_lens)), q_lens)
    if (pos < 0).any():
        raise ValueError("AttentionMetadata.q_positions must be >= 0")
    if (pos >= kv[seq]).any():
        t = int((pos >= kv[seq]).nonzero()[0])
        raise ValueError(
            f"AttentionMetadata.q_positions[{t}] = {int(pos[t])} is not below kv_lens of its "
            f"sequence ({int(kv[seq[t]])}): write the token's K/V and count it in kv_lens"
        )
    same_seq = seq[1:] == seq[:-1]
    if ((pos[1:] <= pos[:-1]) & same_seq).any():
        raise ValueError("AttentionMetadata.q_positions must be strictly ascending per sequence")


def _check_tables_and_slots(table, slots, kv) -> None:
    if (table < -1).any():
        raise ValueError("AttentionMetadata.block_tables entries must be block ids >= 0 or -1")
    written = slots[slots >= 0]
    if len(torch.unique(written)) != len(written):
        raise ValueError("AttentionMetadata.slot_mapping repeats a slot: two tokens, one place")


def _min_block_size(table: torch.Tensor, kv: torch.Tensor) -> int:
    """Smallest block size for which every sequence's leading valid blocks cover its KV."""
    if not len(kv):
        return 1
    valid = (table >= 0).long()
    leading = valid.cumprod(dim=1).sum(dim=1) if table.shape[1] else torch.zeros_like(kv)
    if ((leading == 0) & (kv > 0)).any():
        s = int(((leading == 0) & (kv > 0)).nonzero()[0])
        raise ValueError(f"AttentionMetadata.block_tables row {s} has no block for its KV")
    need = torch.where(kv > 0, (kv + leading.clamp(min=1) - 1) // leading.clamp(min=1), 1)
    return int(need.max())
