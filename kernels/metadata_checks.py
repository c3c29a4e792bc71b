"""Host-side construction, validation and derived values of ``AttentionMetadata``.

Everything here works on numpy copies of the five fields (zero-copy views of CPU tensors), so
that each check costs a few microseconds whatever the batch and no Python loop runs over
tokens. Every failed check raises ``ValueError`` naming the field (the messages are part of
``AttentionMetadata``'s contract).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

# (field name, dtype, number of dims), in field order.
FIELD_SPECS = (("cu_seqlens_q", torch.int32, 1), ("q_positions", torch.int32, 1),
               ("kv_lens", torch.int32, 1), ("block_tables", torch.int32, 2),
               ("slot_mapping", torch.int64, 1))


class HostFields(NamedTuple):
    """Host (numpy) copies of the five fields, in field order and dtypes."""

    cu_seqlens_q: np.ndarray
    q_positions: np.ndarray
    kv_lens: np.ndarray
    block_tables: np.ndarray
    slot_mapping: np.ndarray

    @classmethod
    def read(cls, tensors: Sequence[torch.Tensor]) -> HostFields:
        """Host copies of ``tensors``: views on the CPU; one device read (one sync) elsewhere."""
        if tensors[0].device.type == "cpu":
            return cls(*(t.detach().numpy() for t in tensors))
        flat = torch.cat([t.detach().reshape(-1).long() for t in tensors]).cpu().numpy()
        parts, start = [], 0
        for t, (_, dtype, _) in zip(tensors, FIELD_SPECS, strict=True):
            part = flat[start:start + t.numel()].reshape(tuple(t.shape))
            parts.append(part.astype(np.int32 if dtype == torch.int32 else np.int64))
            start += t.numel()
        return cls(*parts)

    @classmethod
    def build(cls, positions: Sequence[Sequence[int]], kv_lens: Sequence[int],
              block_tables: Sequence[Sequence[int]], block_size: int) -> HostFields:
        """The fields of ``AttentionMetadata.for_sequences``, slots derived from the tables."""
        q_lens = np.fromiter(map(len, positions), dtype=np.int64, count=len(positions))
        cu = np.zeros(len(positions) + 1, dtype=np.int32)
        np.cumsum(q_lens, out=cu[1:])
        flat = np.fromiter((p for run in positions for p in run), dtype=np.int64,
                           count=int(cu[-1]))
        widths = np.fromiter(map(len, block_tables), dtype=np.int64, count=len(block_tables))
        table = np.full((len(block_tables), int(widths.max(initial=0))), -1, dtype=np.int32)
        for s, row in enumerate(block_tables):
            table[s, :len(row)] = row
        seq = np.repeat(np.arange(len(positions)), q_lens)
        block = flat // block_size
        past = block >= widths[seq]
        if past.any():
            t = int(past.argmax())
            raise ValueError(f"position {flat[t]} of sequence {seq[t]} is past its block table")
        slots = table[seq, block].astype(np.int64) * block_size + flat % block_size
        return cls(cu, flat.astype(np.int32), np.asarray(kv_lens, dtype=np.int32).reshape(-1),
                   table, slots)


@dataclass(frozen=True)
class DecodeFields:
    """Decode-shaped fields built and checked by :func:`decode_fields` (Python over sequences,
    no per-token work), with their derived values: what ``AttentionMetadata.for_decode``
    hands to the constructor instead of :class:`HostFields`."""

    host: HostFields
    derived: dict[str, Any]


def decode_fields(kv_lens: Sequence[int], block_tables: Sequence[Sequence[int]],
                  block_size: int) -> DecodeFields:
    """Sequence ``s`` has one query at ``kv_lens[s] - 1``; ``block_tables[s]`` holds its block
    ids (all ``>= 0``), enough for ``kv_lens[s]`` positions. Raises ``ValueError`` otherwise."""
    if len(kv_lens) != len(block_tables):
        raise ValueError(f"kv_lens and block_tables must have one entry per sequence, got "
                         f"{len(kv_lens)} and {len(block_tables)}")
    slots, need, top = [], 1, -1
    for s, (kv, row) in enumerate(zip(kv_lens, block_tables, strict=True)):
        if kv < 1 or len(row) * block_size < kv:
            raise ValueError(f"AttentionMetadata.kv_lens[{s}] = {kv}: a decode query needs "
                             f"1 <= kv_len <= {len(row)} blocks * {block_size}")
        low, high = min(row), max(row)
        if low < 0:
            raise ValueError(f"AttentionMetadata.block_tables row {s} has block id {low}")
        slots.append(row[(kv - 1) // block_size] * block_size + (kv - 1) % block_size)
        need, top = max(need, -(-kv // len(row))), max(top, high)
    if len(set(slots)) != len(slots):
        raise ValueError("AttentionMetadata.slot_mapping repeats a slot: two tokens, one place")
    width = max(map(len, block_tables), default=0)
    table = np.full((len(block_tables), width), -1, dtype=np.int32)
    for s, row in enumerate(block_tables):
        table[s, :len(row)] = row
    kv = np.asarray(kv_lens, dtype=np.int32).reshape(-1)
    pos = kv - 1
    host = HostFields(np.arange(len(kv) + 1, dtype=np.int32), pos, kv, table,
                      np.asarray(slots, dtype=np.int64).reshape(-1))
    n = len(kv)
    derived = {"num_seqs": n, "num_tokens": n, "max_q_len": 1 if n else 0,
               "max_kv_len": max(kv_lens, default=0), "min_block_size": need,
               "max_block_id": top, "is_decode": True,
               "host_cu_seqlens": tuple(range(n + 1)), "host_kv_lens": tuple(kv_lens),
               "host_q_positions": torch.from_numpy(pos.astype(np.int64)),
               "contiguous_suffix": (True,) * n}
    return DecodeFields(host, derived)


def check_tensor(name: str, t: object, dtype: torch.dtype, ndim: int) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"AttentionMetadata.{name} must be a torch.Tensor, got {type(t)}")
    if t.dtype != dtype or t.dim() != ndim:
        raise ValueError(
            f"AttentionMetadata.{name} must be {dtype} with {ndim} dim(s), "
            f"got {t.dtype} of shape {tuple(t.shape)}"
        )


def validate(h: HostFields) -> np.ndarray:
    """Check every field; returns the query length of each sequence, int64 ``[S]``."""
    q_lens = _check_offsets(h)
    _check_positions(h, q_lens)
    _check_tables_and_slots(h)
    return q_lens


def derive(h: HostFields, q_lens: np.ndarray) -> dict[str, Any]:
    """The derived host values of ``AttentionMetadata`` (see its docstring)."""
    cu, pos, kv, table = h.cu_seqlens_q, h.q_positions, h.kv_lens, h.block_tables
    num_seqs = len(kv)
    first = pos[np.minimum(cu[:-1], max(len(pos) - 1, 0))] if len(pos) else q_lens
    suffix = (q_lens > 0) & (first == kv - q_lens)
    return {
        "num_seqs": num_seqs,
        "num_tokens": len(pos),
        "max_q_len": int(q_lens.max()) if num_seqs else 0,
        "max_kv_len": int(kv.max()) if num_seqs else 0,
        "min_block_size": _min_block_size(table, kv),
        "max_block_id": int(table.max()) if table.size else -1,
        "is_decode": bool((q_lens == 1).all() and suffix.all()),
        "host_cu_seqlens": tuple(cu.tolist()),
        "host_kv_lens": tuple(kv.tolist()),
        "host_q_positions": torch.from_numpy(pos.astype(np.int64)),
        "contiguous_suffix": tuple(suffix.tolist()),
    }


def _check_offsets(h: HostFields) -> np.ndarray:
    cu, pos, kv, table, slots = h
    num_seqs = len(cu) - 1
    if num_seqs < 0 or int(cu[0]) != 0:
        raise ValueError("AttentionMetadata.cu_seqlens_q must have S+1 >= 1 entries, starting at 0")
    q_lens = np.diff(cu.astype(np.int64))
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


def _check_positions(h: HostFields, q_lens: np.ndarray) -> None:
    pos, kv = h.q_positions, h.kv_lens
    if not len(pos):
        return
    seq = np.repeat(np.arange(len(q_lens)), q_lens)
    if (pos < 0).any():
        raise ValueError("AttentionMetadata.q_positions must be >= 0")
    beyond = pos >= kv[seq]
    if beyond.any():
        t = int(beyond.argmax())
        raise ValueError(
            f"AttentionMetadata.q_positions[{t}] = {int(pos[t])} is not below kv_lens of its "
            f"sequence ({int(kv[seq[t]])}): write the token's K/V and count it in kv_lens"
        )
    if ((pos[1:] <= pos[:-1]) & (seq[1:] == seq[:-1])).any():
        raise ValueError("AttentionMetadata.q_positions must be strictly ascending per sequence")


def _check_tables_and_slots(h: HostFields) -> None:
    if (h.block_tables < -1).any():
        raise ValueError("AttentionMetadata.block_tables entries must be block ids >= 0 or -1")
    written = np.sort(h.slot_mapping[h.slot_mapping >= 0])
    if (written[1:] == written[:-1]).any():
        raise ValueError("AttentionMetadata.slot_mapping repeats a slot: two tokens, one place")


def _min_block_size(table: np.ndarray, kv: np.ndarray) -> int:
    """Smallest block size for which every sequence's leading valid blocks cover its KV."""
    if not len(kv):
        return 1
    valid = table >= 0
    leading = np.cumprod(valid, axis=1).sum(axis=1) if table.shape[1] else np.zeros_like(kv)
    uncovered = (leading == 0) & (kv > 0)
    if uncovered.any():
        raise ValueError(f"AttentionMetadata.block_tables row {int(uncovered.argmax())} has no "
                         f"block for its KV")
    per = np.maximum(leading, 1)
    need = np.where(kv > 0, (kv.astype(np.int64) + per - 1) // per, 1)
    return int(need.max())
