"""Helpers of the daemon tests: the block layout, blocks to store and a registered client.

The daemons themselves come from the ``start_daemon`` fixture (``tests/conftest.py``,
``tests/daemons.py``): ``start_daemon(**flags)`` starts ``python -m asymcache.cacheserver`` with
small tiers, waits for its PING reply and stops it at the end of the test.
"""

from __future__ import annotations

import hashlib
import socket

from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id
from asymcache.cacheserver.protocol import BlockRef
from asymcache.engine.client import CacheClient

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=16, block_size=16, dtype="float16")
BLOCK_BYTES = LAYOUT.bytes_per_block  # 4096


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_refs(n: int, salt: str = "", model: str = "test-model", start: int = 0
              ) -> list[BlockRef]:
    """``n`` chained blocks of one sequence in the namespace of (model, LAYOUT, salt)."""
    ns = namespace_id(model, LAYOUT, salt)
    tokens = list(range(start, start + n * LAYOUT.block_size))
    keys = block_keys(ns, tokens, LAYOUT.block_size)
    return [BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]


def registered_client(endpoint: str, engine_id: str = "eng", gpu_slots: int = 4,
                      **kw: object) -> CacheClient:
    """A client (no heartbeat thread, 10 s timeout) that has said HELLO for ``test-model``."""
    c = CacheClient(endpoint, engine_id=engine_id, timeout_s=10, heartbeat=False, **kw)
    c.hello("test-model", LAYOUT, gpu_slots=gpu_slots)
    return c


def payload(ref: BlockRef) -> bytes:
    """Deterministic block bytes for ``ref`` (BLOCK_BYTES long, different per key)."""
    seed = hashlib.blake2b(ref.key, digest_size=32).digest()
    return (seed * (BLOCK_BYTES // len(seed) + 1))[:BLOCK_BYTES]
