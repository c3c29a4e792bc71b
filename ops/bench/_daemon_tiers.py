"""Data-plane workloads of ``asymcache bench daemon``: CPU tier, index rebuild, Redis.

* CPU tier: an engine moves a batch of 256 KiB blocks through the shared-memory tier with the
  requests that go with it (write: ALLOCATE cpu + copies into the mapped slots + COMMIT; read:
  LOOKUP + copies out + RELEASE), against one numpy copy of the same bytes.
* Disk tier: in ``ops/bench/_daemon_disk.py``.
* Index rebuild: a daemon started on a disk tier holding N entries; its start-up log says how long
  indexing took.
* Redis (reference only): SET/GET of the same blocks, pipelined, to a local ``redis-server``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id
from asymcache.engine.client import CacheClient
from asymcache.tiers.base import BlockHeader

# a 1B-class model (16 layers, 8 KV heads of 64) with 8-token blocks: 256 KiB per block
LAYOUT = KVLayout(num_layers=16, num_kv_heads=8, head_dim=64, block_size=8, dtype="bfloat16")
BLOCK = LAYOUT.bytes_per_block


def refs(n: int, start: int, model: str = "bench-data") -> list[p.BlockRef]:
    ns = namespace_id(model, LAYOUT)
    tokens = np.arange(start, start + n * LAYOUT.block_size)
    keys = block_keys(ns, tokens, LAYOUT.block_size)
    return [p.BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]


def cpu_tier(endpoint: str, batch_bytes: int, iters: int) -> dict:
    """GB/s through the daemon's CPU tier (write, read) and of a plain memcpy, median batch."""
    n = batch_bytes // BLOCK
    src = np.random.default_rng(0).integers(0, 255, (n, BLOCK), dtype=np.uint8)
    dst = np.empty_like(src)
    times: dict[str, list[float]] = {"write": [], "read": [], "memcpy": []}
    with CacheClient(endpoint, engine_id=f"cpu-bench-{batch_bytes}", heartbeat=False,
                     timeout_s=30) as c:
        reg = c.hello("bench-cpu", LAYOUT, gpu_slots=16)
        slab = np.frombuffer(c.cpu_tier_view(), np.uint8).reshape(reg.cpu_num_slots, -1)
        for it in range(iters + 1):  # round 0 warms up (page faults, allocations)
            batch = refs(n, 0, model=f"bench-cpu-{batch_bytes}-{it}")
            keys = [r.key for r in batch]
            t0 = time.perf_counter()
            slots = c.reserve_cpu(batch)
            for i, s in enumerate(slots):
                slab[s, :BLOCK] = src[i]
            c.commit(batch, slots, tier="cpu")
            t1 = time.perf_counter()
            found = c.lookup(keys)
            for i, s in enumerate(found.slots):
                dst[i] = slab[s, :BLOCK]
            c.release(keys)
            t2 = time.perf_counter()
            if min(slots) < 0 or not np.array_equal(src, dst):
                raise RuntimeError("the CPU tier returned other bytes than were written")
            np.copyto(dst, src)
            t3 = time.perf_counter()
            if it:
                for k, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    times[k].append(dt)
        del slab  # release the view before the client unmaps the tier
    return _rates(times, batch_bytes)


def _rates(times: dict[str, list[float]], nbytes: int) -> dict[str, float]:
    """GB/s from the median time of each measure (robust to a busy machine's spikes)."""
    return {k + "_gbps": nbytes / 1e9 / float(np.median(v)) for k, v in times.items()}


def fill_disk(path: Path, entries: int, progress: bool = True) -> int:
    """A disk tier at ``path`` holding ``entries`` small blocks; returns the capacity used."""
    from tqdm import tqdm

    from asymcache.tiers.disk import DiskTier

    capacity = entries * 4608 + (64 << 20)
    tier = DiskTier(str(path), capacity_bytes=capacity, block_bytes=64)
    payload = bytes(64)
    header = BlockHeader(bytes(16), bytes(16), 0, LAYOUT.canonical(), 64, 0)
    chunk = 10_000
    try:
        for start in tqdm(range(0, entries, chunk), disable=not progress, unit_scale=chunk,
                          desc="filling the disk tier"):
            items = [(i.to_bytes(16, "little"), header, payload)
                     for i in range(start, min(start + chunk, entries))]
            tier.put(items)
            tier.flush()
    finally:
        tier.close()
    return capacity


def anon_rss_bytes(pid: int) -> int:
    """A process's resident anonymous memory (its heap; not file pages or shared memory, so
    neither the LMDB map nor the CPU tier's slab counts), from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/{pid}/status has no RssAnon line")


def parse_rebuild(log_text: str) -> tuple[int, float]:
    m = re.search(r"(\d+) blocks indexed from disk in ([\d.]+)s", log_text)
    if m is None:
        raise RuntimeError("the daemon's log has no index rebuild line")
    return int(m.group(1)), float(m.group(2))


def redis_reference(total_bytes: int, port: int) -> dict | None:
    """SET/GET GB/s of the same blocks against a local redis-server, or None if absent."""
    exe = shutil.which("redis-server")
    if exe is None:
        return None
    import redis

    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        r = redis.Redis(host="127.0.0.1", port=port)
        for _ in range(50):
            try:
                r.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        n = total_bytes // BLOCK
        blob = os.urandom(BLOCK)
        keys = [f"bench:{i}".encode() for i in range(n)]
        t0 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, blob)
        pipe.execute()
        t1 = time.perf_counter()
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.get(k)
        assert all(v == blob for v in pipe.execute())
        t2 = time.perf_counter()
        gb = total_bytes / 1e9
        return {"set_gbps": gb / (t1 - t0), "get_gbps": gb / (t2 - t1)}
    finally:
        proc.terminate()
        proc.wait(10)
