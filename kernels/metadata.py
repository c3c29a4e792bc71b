"""``AttentionMetadata``: the one object the engine builds per step and every layer reads.

DESIGN.md section 7 fixes the fields. Construction validates them once, on the host, and
caches the host-side values that launchers need (number of sequences, longest query run,
longest KV, ...), so that per-layer kernel calls never read device memory from the host.
The checks run in numpy on host copies (:mod:`asymcache.kernels.metadata_checks`): a few
microseconds
per check, whatever the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field

import torch

from asymcache.kernels.metadata_checks import (
    FIELD_SPECS,
    DecodeFields,
    HostFields,
    check_tensor,
    decode_fields,
    derive,
    validate,
)


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
    Construction reads the fields back to the host once (one device read per step on CUDA),
    unless ``host`` gives their host copies (``for_sequences`` and ``for_decode`` do: no device
    read at all; a ``DecodeFields`` comes checked, with its derived values).
    Raises ``ValueError`` naming the field that is wrong.

    ``workspace`` holds buffers that CPU kernels reuse (gathered K/V): pass the same dict to
    every step's metadata (the engine's runner does) and no step allocates them again; they
    grow to the largest need and never carry data from one kernel call to the next. ``scratch``
    holds this step's derived indices (gather rows, masks) and is freed with the metadata.
    """

    cu_seqlens_q: torch.Tensor
    q_positions: torch.Tensor
    kv_lens: torch.Tensor
    block_tables: torch.Tensor
    slot_mapping: torch.Tensor
    workspace: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    host: InitVar[HostFields | DecodeFields | None] = None
    num_seqs: int = field(init=False)
    num_tokens: int = field(init=False)
    max_q_len: int = field(init=False)
    max_kv_len: int = field(init=False)
    min_block_size: int = field(init=False)
    max_block_id: int = field(init=False)
    is_decode: bool = field(init=False)
    host_cu_seqlens: tuple[int, ...] = field(init=False, repr=False)
    host_kv_lens: tuple[int, ...] = field(init=False, repr=False)
    contiguous_suffix: tuple[bool, ...] = field(init=False, repr=False)
    host_q_positions: torch.Tensor = field(init=False, repr=False)
    scratch: dict[str, torch.Tensor] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self, host: HostFields | DecodeFields | None) -> None:
        tensors = (self.cu_seqlens_q, self.q_positions, self.kv_lens, self.block_tables,
                   self.slot_mapping)
        for t, (name, dtype, ndim) in zip(tensors, FIELD_SPECS, strict=True):
            check_tensor(name, t, dtype, ndim)
        devices = {t.device for t in tensors}
        if len(devices) != 1:
            raise ValueError(f"AttentionMetadata fields must share one device, got {devices}")
        if isinstance(host, DecodeFields):  # checked while built (for_decode)
            derived = host.derived
        else:
            host = HostFields.read(tensors) if host is None else host
            derived = derive(host, validate(host))
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
        workspace: dict[str, torch.Tensor] | None = None,
    ) -> AttentionMetadata:
        """Build the metadata from Python lists (the engine, tests, tools).

        ``positions[s]`` are sequence ``s``'s query positions; ``block_tables[s]`` its physical
        block ids in logical order (rows are padded with ``-1``). ``slot_mapping`` is derived:
        each query token's K/V goes to the slot of its position in its sequence's table.
        ``workspace``: see the class docstring (a fresh one when ``None``).
        """
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        if not len(positions) == len(kv_lens) == len(block_tables):
            raise ValueError(f"positions, kv_lens and block_tables must have one entry per "
                             f"sequence, got {len(positions)}, {len(kv_lens)}, "
                             f"{len(block_tables)}")
        host = HostFields.build(positions, kv_lens, block_tables, block_size)
        return cls._from_host(host, host, device, workspace)

    @classmethod
    def for_decode(
        cls,
        kv_lens: Sequence[int],
        block_tables: Sequence[Sequence[int]],
        block_size: int,
        device: torch.device | str = "cpu",
        workspace: dict[str, torch.Tensor] | None = None,
    ) -> AttentionMetadata:
        """Decode-shaped metadata: sequence ``s`` has one query, at ``kv_lens[s] - 1``.

        The same object as ``for_sequences([[n - 1] for n in kv_lens], ...)``, checked in
        Python per sequence (cheaper for a decode step); ``block_tables[s]`` must hold only
        block ids (no ``-1``) and cover ``kv_lens[s]``.
        """
        if block_size <= 0:
            raise ValueError(f"block_size must be positive, got {block_size}")
        fields = decode_fields(kv_lens, block_tables, block_size)
        return cls._from_host(fields.host, fields, device, workspace)

    @classmethod
    def _from_host(cls, host: HostFields, checked: HostFields | DecodeFields,
                   device: torch.device | str, workspace: dict[str, torch.Tensor] | None
                   ) -> AttentionMetadata:
        tensors = [torch.from_numpy(a) for a in host]
        if torch.device(device).type != "cpu":
            tensors = [t.to(device) for t in tensors]
        return cls(*tensors, workspace={} if workspace is None else workspace, host=checked)
