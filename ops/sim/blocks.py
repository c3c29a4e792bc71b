"""The simulator's blocks and tier stores for the tier chain (``cacheserver/chain.py``).

A simulated tier holds no bytes: :class:`CountStore` is full when its policy holds
``capacity`` blocks, and :class:`SimBlock` is a block's policy view plus what the chain keeps
per block (``where``, its pin), as the daemon's ``BlockRecord`` is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from asymcache.cacheserver.policy import BlockInfo, ResidencyPolicy


@dataclass(slots=True, eq=False)
class SimBlock:
    key: int
    parent: int | None
    position: int
    n_tokens: int
    n_bytes: int
    where: int = 0  # one bit per tier that holds it
    pinned: bool = False
    pin_until: float | None = None
    busy: int = 0
    session: int | None = None  # client signals (policy/sessions.py), as on BlockInfo
    shared: bool = False
    retain_until: float = 0.0

    def info(self) -> BlockInfo:
        return cast(BlockInfo, self)

    def pin_active(self, now: float) -> bool:
        return self.pinned and (self.pin_until is None or self.pin_until > now)


class CountStore:
    """A tier of ``capacity`` blocks; ``policy`` (set by the replay) counts what it holds."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.policy: ResidencyPolicy | None = None

    def fits(self, block: SimBlock) -> bool:
        return self.capacity > 0

    def full(self, block: SimBlock) -> bool:
        assert self.policy is not None
        return len(self.policy) >= self.capacity

    def put(self, block: SimBlock, data: object) -> bool:
        return True

    def read(self, block: SimBlock) -> bytes:
        return b""

    def drop(self, key: int, block: SimBlock | None) -> None:
        pass

    def take_failed(self) -> list:
        return []
