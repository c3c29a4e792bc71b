"""A client registered with the daemon as engine ``soak-probe``, for the faults that must find
or write blocks themselves: where a key is (LOOKUP without leases), a lease that keeps a block
where it is while it is tampered with, a CPU slot's bytes (the shared-memory mapping), a GET,
and a durable PUT of fresh blocks in a namespace of its own (``durable`` = the disk tier wrote
them). It registers with the engines' model fingerprint and
layout, like the hostile engine of ``tests/engine/test_cpu_integrity.py``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

from asymcache.cacheserver.blocks import block_keys, namespace_id
from asymcache.cacheserver.protocol import BlockRef, Where
from asymcache.engine.client import CacheClient
from asymcache.ops.soak.prompts import ModelKeys

_PUTS = itertools.count()
MAX_PER_PUT = 16  # blocks per PUT message (the engine sends at most 32)


class Probe:
    """See the module docstring; a context manager."""

    def __init__(self, endpoint: str, keys: ModelKeys, timeout_s: float = 10.0) -> None:
        self.keys = keys
        self.client = CacheClient(endpoint, engine_id="soak-probe", timeout_s=timeout_s,
                                  heartbeat=False)
        self.client.hello(keys.fingerprint, keys.layout, gpu_slots=1)

    @property
    def block_bytes(self) -> int:
        return self.keys.layout.bytes_per_block

    def namespace(self, salt: str) -> bytes:
        return namespace_id(self.keys.fingerprint, self.keys.layout, salt)

    def prompt_keys(self, salt: str, tokens: Sequence[int]) -> list[bytes]:
        return block_keys(self.namespace(salt), list(tokens), self.keys.block_size)

    def where(self, keys: Sequence[bytes]) -> list[tuple[bytes, Where, int, int]]:
        """``(key, where, slot, checksum)`` per key, nothing leased."""
        out = []
        for at in range(0, len(keys), 1024):
            part = list(keys[at:at + 1024])
            found = self.client.lookup(part, lease=False)
            sums = list(found.checksums) or [0] * len(part)
            out += list(zip(part, found.where, found.slots, sums, strict=True))
        return out

    def hold(self, key: bytes) -> tuple[Where, int]:
        """Lease ``key`` where it is (it cannot be evicted or move until :meth:`release`):
        ``(where, slot)``."""
        found = self.client.lookup([key], lease=True)
        return found.where[0], found.slots[0]

    def release(self, key: bytes) -> None:
        self.client.release([key])

    def get(self, key: bytes) -> bytes | None:
        got = self.client.get([key])[0]
        return None if got is None else bytes(got)

    def durable_put(self, blocks: int = 4) -> bool:
        """Store ``blocks`` fresh blocks; True if the daemon says they reached the disk."""
        ns = namespace_id(self.keys.fingerprint, self.keys.layout, f"soak-probe-{next(_PUTS)}")
        tokens = list(range(blocks * self.keys.block_size))
        keys = block_keys(ns, tokens, self.keys.block_size)
        refs = [BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]
        durable = True
        for at in range(0, len(refs), MAX_PER_PUT):
            part = refs[at:at + MAX_PER_PUT]
            got = self.client.put(part, [os.urandom(self.block_bytes) for _ in part],
                                  durable=True)
            durable = durable and bool(got.durable)
        return durable

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
