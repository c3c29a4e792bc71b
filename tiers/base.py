"""The storage-tier interface: one ABC, batched first, implementations chosen by name.

A tier stores block *bytes* under 16-byte block keys (see ``cacheserver/blocks.py``). It knows
nothing about leases, policies or engines: the daemon's block index decides what enters and
leaves a tier, and never asks a tier to evict on its own except where stated (a full disk).

Contract shared by every tier:

* ``put`` stores each block with its :class:`BlockHeader` and returns one bool per item:
  ``False`` means *refused* (no room, value too large, I/O error) and the tier is unchanged for
  that key. Refusal is normal operation, never an exception; a payload whose length differs
  from ``header.length`` or a key that is not 16 bytes is a caller bug and raises ``ValueError``.
  Putting a key the tier already holds is a no-op that returns ``True`` (keys name content).
* ``get`` returns one entry per key: the block's bytes, or ``None`` for a miss. A missing key,
  a checksum mismatch, a short value or an I/O error are all misses; the latter three are also
  counted in ``error_counts()``. A tier never returns bytes that differ from what was put.
* ``contains`` answers from the tier's own index without touching the bytes.
* ``delete`` removes what it finds and returns how many keys it removed.
* Memory and space are bounded: a tier is sized when it is created (``capacity_bytes``) and
  ``used_bytes`` never exceeds it; the daemon evicts first, using ``entry_bytes`` to know what a
  block will occupy, and a refused ``put`` is the safety net.
* A tier that accepted a block and later lost it (a queued write that failed, a corrupt value it
  removed) reports the key once through ``take_failed()``, so the daemon can drop it from its
  index.

Side effects: none beyond the tier's own storage. Thread-safety: a tier's methods are called from
the daemon's event loop thread; tiers with background work (the disk writer) synchronise
internally.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import ClassVar

import xxhash

Buffer = bytes | bytearray | memoryview
KEY_BYTES = 16

# Tiers that ship with AsymCache, imported on first use so that ``create_tier("disk", ...)``
# works without the caller importing the module (and ``import asymcache.tiers.base`` stays light).
_BUILTIN_MODULES = {name: f"asymcache.tiers.{name}" for name in ("cpu", "disk", "remote")}


def checksum(data: Buffer) -> int:
    """xxh3-64 digest of ``data`` (any contiguous buffer) as an unsigned 64-bit int."""
    return xxhash.xxh3_64_intdigest(data)


@dataclass(frozen=True, slots=True)
class BlockHeader:
    """What every stored block carries besides its bytes (the same in DISK and REMOTE values).

    ``position`` is the block's index in its sequence (token position = position · block_size);
    ``layout`` is the canonical text of the ``KVLayout``; ``checksum`` is the xxh3-64 digest of
    the payload bytes (:func:`checksum`; 0 = not computed yet: tiers that verify bytes compute
    it themselves and refuse a non-zero checksum that does not match); ``length`` is the payload
    length in bytes.
    """

    namespace: bytes
    parent: bytes
    position: int
    layout: str
    length: int
    checksum: int

    @classmethod
    def describe(
        cls, namespace: bytes, parent: bytes, position: int, layout: str, payload: Buffer
    ) -> BlockHeader:
        """The header of ``payload`` with its length and checksum computed (one hash pass)."""
        return cls(namespace, parent, position, layout, memoryview(payload).nbytes,
                   checksum(payload))


class Tier(ABC):
    """A batched key → bytes store of bounded size. See the module docstring for the contract."""

    name: ClassVar[str]

    @property
    @abstractmethod
    def capacity_blocks(self) -> int:
        """Most blocks this tier can hold at once (fixed at creation; an upper bound for tiers
        that store blocks of any size)."""

    @property
    @abstractmethod
    def capacity_bytes(self) -> int:
        """Bytes this tier may occupy, as counted by :meth:`entry_bytes` (fixed at creation)."""

    @property
    @abstractmethod
    def used_bytes(self) -> int:
        """Bytes occupied now (sum of :meth:`entry_bytes` over held blocks); ≤ capacity."""

    def entry_bytes(self, header: BlockHeader) -> int:
        """Bytes a block with this header occupies in this tier (payload plus overheads)."""
        return header.length

    @abstractmethod
    def __len__(self) -> int:
        """Blocks held now."""

    @abstractmethod
    def put(
        self, items: Sequence[tuple[bytes, BlockHeader, Buffer]], durable: bool = False
    ) -> list[bool]:
        """Store blocks; one bool per item, ``False`` = refused (tier unchanged for that key).

        ``durable=True`` returns only once the accepted blocks would survive a crash of this
        process (volatile tiers ignore it); its bools then also report writes that failed.
        """

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

    def take_failed(self) -> list[bytes]:
        """Keys this tier accepted but no longer holds (failed writes, corrupt values removed),
        each reported once; the caller drops them from its index."""
        return []

    def error_counts(self) -> dict[str, int]:
        """Errors seen so far by kind (``checksum``, ``short``, ``io``, ``full``...)."""
        return {}

    def flush(self) -> None:  # noqa: B027 - tiers without pending writes have nothing to do
        """Block until every accepted ``put`` is durable (no-op for volatile tiers)."""

    def close(self) -> None:  # noqa: B027 - tiers without resources have nothing to release
        """Flush and release resources. The tier is unusable afterwards."""


def check_key(key: object) -> bytes:
    """``key`` if it is a 16-byte ``bytes`` block key, else ``ValueError`` naming the problem."""
    if not isinstance(key, bytes):
        raise ValueError(f"a block key must be bytes, got {type(key).__name__}")
    if len(key) != KEY_BYTES:
        raise ValueError(f"a block key must be {KEY_BYTES} bytes long, got {len(key)}")
    return key


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
    """The tier class registered under ``name`` (built-in tiers are imported on demand)."""
    if name not in _REGISTRY and name in _BUILTIN_MODULES:
        importlib.import_module(_BUILTIN_MODULES[name])
    try:
        return _REGISTRY[name]
    except KeyError:
        known = sorted(set(_REGISTRY) | set(_BUILTIN_MODULES))
        raise ValueError(f"unknown tier {name!r}; known: {known}") from None


def create_tier(name: str, **config: object) -> Tier:
    """Build a registered tier by name with its keyword configuration."""
    return tier_class(name)(**config)
