"""A real :class:`CacheServer` on the test's own event loop, for faults a test must inject
into the daemon's code (a failing housekeeping step, a handler bug, a slow index rebuild).

``async with serving(tmp_path, **fields) as server`` starts it (small tiers, LRU, no HTTP
unless asked) on a temporary ipc path, waits until it is ready (``wait_ready=False``: until
its start-up task runs) and stops it gracefully at the end. Start-up's process-wide garbage
collector settings are restored afterwards. ``Peer`` is a DEALER that sends raw requests and
collects replies without blocking the loop the server runs on.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.config import ServerConfig
from asymcache.cacheserver.server import CacheServer
from tests.daemons import SMALL

_STEP_S = 0.01


@contextlib.asynccontextmanager
async def serving(tmp_path: Path, wait_ready: bool = True,
                  **fields: object) -> AsyncIterator[CacheServer]:
    ipc_dir = tempfile.mkdtemp(prefix="ac-")
    values = {k: v for k, v in SMALL.items() if not k.endswith("_bytes")}
    sizes = {"cpu_bytes": 256 << 10, "cpu_slot_bytes": 8 << 10, "disk_bytes": 2 << 20,
             "disk_map_bytes": 16 << 20}
    cfg = ServerConfig(endpoint=f"ipc://{ipc_dir}/s.ipc", data_dir=str(tmp_path / "data"),
                       cpu_populate=False, **{**values, **sizes, **fields})
    threshold = gc.get_threshold()
    server = CacheServer(cfg)
    task = asyncio.get_running_loop().create_task(server.serve_async())
    try:
        if wait_ready:
            await until(lambda: server.ready or task.done(), 30.0)
            if task.done():
                task.result()  # start-up failed: raise its error
        yield server
    finally:
        server.request_stop()
        await asyncio.wait_for(task, 30.0)
        gc.unfreeze()
        gc.set_threshold(*threshold)
        shutil.rmtree(ipc_dir, ignore_errors=True)


async def until(condition: object, timeout_s: float) -> None:
    """Poll ``condition()`` every 10 ms, at most ``timeout_s``; AssertionError if never true."""
    for _ in range(int(timeout_s / _STEP_S)):
        if condition():  # type: ignore[operator]
            return
        await asyncio.sleep(_STEP_S)
    raise AssertionError(f"not true within {timeout_s}s")


class Peer:
    """A DEALER connected to ``server``: ``send`` raw requests, ``replies(n)`` decoded."""

    def __init__(self, server: CacheServer) -> None:
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(server.config.endpoint)

    def send(self, msg: p.Message, rid: int) -> None:
        self.sock.send_multipart(msg.to_wire(rid))

    async def replies(self, n: int, timeout_s: float = 10.0) -> dict[int, p.Reply]:
        """The next ``n`` replies by request id (AssertionError if they do not all come)."""
        out: dict[int, p.Reply] = {}

        def poll() -> bool:
            while len(out) < n and self.sock.poll(0):
                rid, reply = p.decode_reply(self.sock.recv_multipart())
                out[rid] = reply
            return len(out) >= n

        try:
            await until(poll, timeout_s)
        except AssertionError:
            raise AssertionError(f"{len(out)} of {n} replies within {timeout_s}s") from None
        return out

    def close(self) -> None:
        self.sock.close()
        self._ctx.term()
