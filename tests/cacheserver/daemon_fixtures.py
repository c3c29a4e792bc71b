"""Shared test helpers: a real daemon process on a temporary ipc path, blocks to store in it.

``start_daemon(**flags)`` starts ``python -m asymcache.cacheserver`` (small tiers, no HTTP unless
asked), waits for its PING reply and stops it (SIGTERM) at the end of the test. Import the fixture
into a test module with ``from tests.cacheserver.daemon_fixtures import start_daemon``.
"""

from __future__ import annotations

import hashlib
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id
from asymcache.cacheserver.launch import DaemonProcess
from asymcache.cacheserver.protocol import BlockRef
from asymcache.cacheserver.protocol.sockets import ClientCurve
from asymcache.engine.client import CacheClient

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=16, block_size=16, dtype="float16")
BLOCK_BYTES = LAYOUT.bytes_per_block  # 4096
# LRU everywhere, so tests can say exactly which block a full tier gives up
SMALL = {"cpu_bytes": "256KiB", "cpu_slot_bytes": "8KiB", "disk_bytes": "2MiB",
         "disk_map_bytes": "16MiB", "metrics_port": 0, "log_level": "info", "policy": "lru"}


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


class DaemonFactory:
    """Starts daemons for one test; all stopped at teardown."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.ipc_dir = tempfile.mkdtemp(prefix="ac-")  # short: ipc paths are limited to ~100 B
        self.started: list[DaemonProcess] = []

    def __call__(self, data_dir: Path | None = None, endpoint: str | None = None,
                 curve: ClientCurve | None = None, **flags: object) -> DaemonProcess:
        endpoint = endpoint or f"ipc://{self.ipc_dir}/d{len(self.started)}.ipc"
        data = str(data_dir or self.tmp_path / "data")
        d = DaemonProcess(endpoint, data, flags={**SMALL, **flags},
                          log_path=str(self.tmp_path / "daemon.log"), curve=curve)
        d.start()
        self.started.append(d)
        return d

    def close(self) -> None:
        for d in self.started:
            d.stop()
        shutil.rmtree(self.ipc_dir, ignore_errors=True)


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[Callable[..., DaemonProcess]]:
    factory = DaemonFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()
