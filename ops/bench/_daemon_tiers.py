"""Data-plane workloads of ``asymcache bench daemon``: CPU tier, index rebuild, Redis.

* CPU tier, one batch at a time: an engine moves a batch of 256 KiB blocks through the
  shared-memory tier with the requests that go with it, each waited for (write: ALLOCATE cpu +
  copies into the mapped slots + COMMIT; read: LOOKUP + copies out + RELEASE), against one numpy
  copy of the same bytes.
* CPU tier, streamed: the same batches one after the other through
  :class:`engine.cpu_stream.CpuTierStream` (requests in flight while the copies run, COMMIT and
  RELEASE one-way), against the same stream of numpy copies into a buffer as large; rounds
  alternate which side goes first, and each round's ratio is kept.
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


def cpu_stream(endpoint: str, batch_bytes: int, total_bytes: int, rounds: int,
               depth: int = 2) -> dict:
    """A stream of ``batch_bytes`` batches (``total_bytes`` in all) written into and read out of
    the CPU tier, and the same stream of plain copies, in ``rounds`` alternating rounds (after
    one warm-up round). Per round: seconds of each side and direction, and the ratios."""
    from asymcache.engine.cpu_stream import CpuTierStream

    n, nb = batch_bytes // BLOCK, total_bytes // batch_bytes
    src = np.random.default_rng(1).integers(0, 255, (nb * n, BLOCK), dtype=np.uint8)
    dst, scratch = np.zeros_like(src), np.zeros_like(src)  # zeros: pages faulted in
    run = os.urandom(4).hex()
    out: list[dict] = []
    with CacheClient(endpoint, engine_id=f"cpu-stream-{batch_bytes}", heartbeat=False,
                     timeout_s=30) as c:
        reg = c.hello("bench-cpu-stream", LAYOUT, gpu_slots=16)
        slab = np.frombuffer(c.cpu_tier_view(), np.uint8).reshape(reg.cpu_num_slots, -1)
        stream = CpuTierStream(c, depth=depth)

        def tier(r: int) -> tuple[float, float]:
            model = f"bench-stream-{batch_bytes}-{run}-{r}"  # blocks no earlier call wrote
            batches = [refs(n, b * n, model) for b in range(nb)]

            def fill(i: int, slots: list[int]) -> None:
                for j, s in enumerate(slots):
                    slab[s, :BLOCK] = src[i * n + j]

            def drain(i: int, slots: list[int | None]) -> None:
                for j, s in enumerate(slots):
                    dst[i * n + j] = slab[s, :BLOCK]

            t0 = time.perf_counter()
            wrote = stream.write(batches, fill)
            t1 = time.perf_counter()
            read = stream.read([[ref.key for ref in b] for b in batches], drain)
            t2 = time.perf_counter()
            if wrote.moved != nb * n or read.moved != nb * n or not np.array_equal(src, dst):
                raise RuntimeError(f"the CPU tier stream moved {wrote.moved}/{read.moved} of "
                                   f"{nb * n} blocks, or other bytes than were written")
            dst.fill(0)
            return t1 - t0, t2 - t1

        def memcpy() -> tuple[float, float]:
            t0 = time.perf_counter()
            for b in range(nb):
                np.copyto(scratch[b * n:(b + 1) * n], src[b * n:(b + 1) * n])
            t1 = time.perf_counter()
            for b in range(nb):
                np.copyto(dst[b * n:(b + 1) * n], scratch[b * n:(b + 1) * n])
            t2 = time.perf_counter()
            return t1 - t0, t2 - t1

        for r in range(rounds + 1):  # round 0 warms up
            if r % 2:
                (cw, cr), (tw, tr) = memcpy(), tier(r)
            else:
                (tw, tr), (cw, cr) = tier(r), memcpy()
            if r:
                out.append({"write_s": tw, "read_s": tr, "memcpy_write_s": cw,
                            "memcpy_read_s": cr, "write_ratio": cw / tw, "read_ratio": cr / tr,
                            "ratio": (cw + cr) / (tw + tr)})
        slab = None  # release the view before the client unmaps the tier
    med = {k: float(np.median([r[k] for r in out])) for k in out[0]}
    return {"batches": nb, "rounds": out, **{f"median_{k}": v for k, v in med.items()}}


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
