"""Victims the daemon named ahead of need: slots an engine can take without a round trip.

A one-way ALLOCATE (protocol 2) asks the daemon for victims before the engine needs the
slots; they come in an ACK. The engine copies each one still in its slot to the CPU slot the
daemon reserved for it at once (``Transfers.demote_ahead``, confirmed with the step's other CPU
copies) and keeps the block, still usable, in the stock. Taking a slot from the stock evicts
the block here and tells the daemon with a one-way FORGET; a victim a request uses again (or
one pinned here) is committed again instead. The daemon never names a stocked victim twice
(it left the engine's policy when it was named). Entries of an earlier registration are
dropped: that registration's HELLO announced the blocks again.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

from asymcache.cacheserver.protocol import BlockRef
from asymcache.engine.block_manager import BlockManager

if TYPE_CHECKING:
    from asymcache.engine.cache_link import CacheLink
    from asymcache.engine.transfers import Transfers


class VictimStock:
    """Up to ``size`` named victims ``(slot, key, generation)`` of one engine's pool."""

    def __init__(self, size: int, blocks: BlockManager, refs: dict[bytes, BlockRef],
                 transfers: Transfers, link: CacheLink) -> None:
        self.size, self.blocks, self.refs = size, blocks, refs
        self.transfers, self.link = transfers, link
        self._stock: deque[tuple[int, bytes, int]] = deque()

    def __len__(self) -> int:
        return len(self._stock)

    def restock(self) -> None:
        """Keep the victims whose ACK came (demoted at once); ask for more when empty slots
        and stock together are fewer than ``size``."""
        got = self.link.take_victims()
        if got:
            self.transfers.demote_ahead(got, self.blocks, self.refs)
            gen = self.link.generation
            self._stock += [(s, k, gen) for s, k, _ in got if self.blocks.key_of(s) == k]
        want = self.size - len(self._stock) - self.blocks.num_empty
        if want > 0 and self.link.connected:
            self.link.prefetch_victims(want)

    def take(self, n: int, now: float) -> list[int]:
        """Up to ``n`` slots, each referenced once (see the module docstring)."""
        out: list[int] = []
        gone: list[tuple[int, bytes]] = []
        back: list[tuple[BlockRef, int]] = []
        gen = self.link.generation
        while self._stock and len(out) < n:
            slot, key, g = self._stock.popleft()
            if g != gen or self.blocks.key_of(slot) != key:
                continue
            if self.blocks.is_idle(slot) and not self.blocks.is_pinned(slot, now):
                self.refs.pop(self.blocks.evict(slot) or b"", None)
                out.append(slot)
                gone.append((slot, key))
            elif key in self.refs:
                back.append((self.refs[key], slot))
        if gone:
            self.link.forget(gone)
        if back:
            self.link.commit("gpu", [r for r, _ in back], [s for _, s in back])
        return out
