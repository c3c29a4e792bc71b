"""The block-major paged KV pool and the copies in and out of it.

The pool is one tensor ``[num_blocks, num_layers, 2, block_size, num_kv_heads, head_dim]`` in the
model dtype (DESIGN.md sections 3 and 7): one block is one contiguous slab, so every move
between tiers is one copy. On CUDA, copies run on a side stream and overlap the forward pass:
a forward waits for the copies issued before it (``wait_for_copies``), and copies out of the
pool wait for the forwards issued before them (so a block is read only once it is written).
On CPU everything runs in order on the calling thread.
"""

from __future__ import annotations

import contextlib

import torch

from asymcache.cacheserver.blocks import KVLayout

_TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype of a ``KVLayout.dtype`` name."""
    try:
        return _TORCH_DTYPES[name]
    except KeyError:
        raise ValueError(f"KV dtype must be one of {sorted(_TORCH_DTYPES)}, got {name!r}") from None


class KVPool:
    """Owns the pool tensor and a copy stream; see the module docstring."""

    def __init__(self, layout: KVLayout, num_blocks: int, device: torch.device | str) -> None:
        if num_blocks <= 0:
            raise ValueError(f"num_blocks must be positive, got {num_blocks}")
        self.layout = layout
        self.num_blocks = num_blocks
        self.device = torch.device(device)
        self.dtype = torch_dtype(layout.dtype)
        shape = (num_blocks, *layout.block_shape)
        self.tensor = torch.zeros(shape, dtype=self.dtype, device=self.device)
        cuda = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self._copies_done = torch.cuda.Event() if cuda else None
        self._compute_done = torch.cuda.Event() if cuda else None

    @property
    def bytes_per_block(self) -> int:
        return self.layout.bytes_per_block

    def block(self, slot: int) -> torch.Tensor:
        """View of one block ``[num_layers, 2, block_size, Hkv, D]``."""
        return self.tensor[slot]

    def host_view(self, buffer: memoryview | bytearray) -> torch.Tensor:
        """A CPU tensor of one block's shape over ``buffer`` (no copy; shares its memory)."""
        if len(buffer) != self.bytes_per_block:
            raise ValueError(f"block buffer has {len(buffer)} bytes, want {self.bytes_per_block}")
        return torch.frombuffer(buffer, dtype=self.dtype).view(self.layout.block_shape)

    def load(self, slots: list[int], sources: list[torch.Tensor]) -> None:
        """Copy host blocks into pool slots (side effect: writes ``pool[slots]``).

        On CUDA the copies are queued on the copy stream and return at once; a later forward
        sees them through :meth:`wait_for_copies`. The sources must stay alive and unchanged
        until then (shared-memory slots leased by the daemon are).
        """
        with self._on_copy_stream():
            for slot, src in zip(slots, sources, strict=True):
                self.tensor[slot].copy_(src, non_blocking=True)
            self._mark_copies()

    def store(self, slots: list[int], dests: list[torch.Tensor]) -> None:
        """Copy pool slots out to host blocks and wait until the bytes are there (the caller
        confirms them to the daemon next)."""
        with self._on_copy_stream():
            if self._copy_stream is not None:
                self._copy_stream.wait_event(self._compute_done)
            for slot, dst in zip(slots, dests, strict=True):
                dst.copy_(self.tensor[slot], non_blocking=True)
            self._mark_copies()
        self.sync_copies()

    def read(self, slot: int) -> bytes:
        """One block's bytes (for PUT to a daemon on another host); waits for pending work."""
        self.sync_copies()
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
        return self.tensor[slot].contiguous().cpu().view(torch.uint8).numpy().tobytes()

    def wait_for_copies(self) -> None:
        """Make the current (compute) stream wait for every copy queued so far (CUDA)."""
        if self._copy_stream is not None:
            torch.cuda.current_stream(self.device).wait_event(self._copies_done)

    def mark_compute(self) -> None:
        """Record the forwards queued so far; later copies out of the pool wait for them."""
        if self._compute_done is not None:
            self._compute_done.record(torch.cuda.current_stream(self.device))

    def sync_copies(self) -> None:
        """Block the host until every queued copy has finished."""
        if self._copies_done is not None:
            self._copies_done.synchronize()

    def _on_copy_stream(self) -> contextlib.AbstractContextManager:
        if self._copy_stream is None:
            return contextlib.nullcontext()
        return torch.cuda.stream(self._copy_stream)

    def _mark_copies(self) -> None:
        if self._copies_done is not None:
            self._copies_done.record(self._copy_stream)

