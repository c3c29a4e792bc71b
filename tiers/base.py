"""The storage-tier interface: one ABC, batched first, implementations chosen by name.

A tier stores block *bytes* under 16-byte block keys (see ``cacheserver/blocks.py``). It knows
nothing about leases, policies or engines: the daemon's block index decides what enters and
leaves a tier, and never asks a tier to evict on its own except where stated (a full disk).

Contract shared by every tier:

* ``put`` stores each block with its :class:`BlockHeader` and returns one bool per item:
  ``False`` means *refused* (no room, value too large, I/O error) and the tier is unchanged for
  that key. Refusal is normal operation, never an exception.
* ``get`` returns one entry per key: the block's bytes, or ``None`` for a miss. A missing key,
  a checksum mismatch, a short value or an I/O error are all misses; the latter three are also
  counted in ``error_counts()``. A tier never returns bytes that differ from what was put.
* ``contains`` answers from the tier's own index without touching the bytes.
* ``delete`` removes what it finds and returns how many keys it removed.
* Memory is bounded: a tier is sized when it is created and never grows past that.

Side effects: none beyond the tier's own storage. Thread-safety: a tier's methods are called from
the daemon's event loop thread; tiers with background work (the disk writer) synchronise
internally.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

Buffer = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What every stored block carries besides its bytes (the same in DISK and REMOTE values).

    ``position`` is the block's index in its sequence (token position = position · block_size);
    ``layout`` is the canonical text of the ``KVLayout``; ``checksum`` is the xxh3-64 digest of
    the payload bytes; ``length`` is the payload length in bytes.
    """

    namespace: bytes
    parent: bytes
    position: int
    layout: str
    length: int
    checksum: int


class Tier(ABC):
    """A batched key → bytes store of bounded size. See the module docstring for the contract."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def capacity_blocks(self) -> int:
        """Most blocks this tier can hold at once (fixed at creation)."""

    @abstractmethod
    def __len__(self) -> int:
        """Blocks held now."""

    @abstractmethod
    def put(self, items: Sequence[tuple[bytes, BlockHeader, Buffer]]) -> list[bool]:
        """Store blocks; one bool per item, ``False`` = refused (tier unchanged for that key)."""

    @abstractmethod
    def get(self, keys: Sequence[bytes]) -> list[Buffer | None]:
        """Bytes of each block, or ``None`` for a miss (absent, corrupt, short, I/O error)."""

    @abstractmethod
    def contains(self, keys: Sequence[bytes]) -> list[bool]:
        """Whether each key is held, from the index only."""

    @abstractmethod
    def delete(self, keys: Sequence[bytes]) -> int:
        """Remove the keys that are held; returns how many were removed."""

    @abstractmethod
    def headers(self) -> Iterator[tuple[bytes, BlockHeader]]:
        """Every held block's key and header (used to rebuild the daemon's index at start)."""

    def error_counts(self) -> dict[str, int]:
        """Errors seen so far by kind (``checksum``, ``short``, ``io``, ``full``...)."""
        return {}

    def flush(self) -> None:  # noqa: B027 - tiers without pending writes have nothing to do
        """Block until every accepted ``put`` is durable (no-op for volatile tiers)."""

    def close(self) -> None:  # noqa: B027 - tiers without resources have nothing to release
        """Flush and release resources. The tier is unusable afterwards."""


_REGISTRY: dict[str, type[Tier]] = {}


def register_tier(name: str) -> Callable[[type[Tier]], type[Tier]]:
    """Class decorator: make a tier implementation constructible by ``create_tier(name, ...)``."""

    def deco(cls: type[Tier]) -> type[Tier]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"tier name {name!r} registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return deco


def tier_class(name: str) -> type[Tier]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown tier {name!r}; known: {sorted(_REGISTRY)}") from None


def create_tier(name: str, **config: object) -> Tier:
    """Build a registered tier by name with its keyword configuration."""
    return tier_class(name)(**config)
