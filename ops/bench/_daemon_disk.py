"""Disk-tier workload of ``asymcache bench daemon``: durable LMDB writes and reads of a batch of
blocks against a plain file holding the same bytes.

Both sides handle the same batch each round: ``n`` blocks of 256 KiB (``total_bytes`` in all),
the same ``numpy`` rows, made durable once per batch.

* **LMDB write** (timed): in the steady regime, ``DiskTier.delete`` of the blocks written
  ``keep`` rounds earlier (the eviction that makes room), then ``DiskTier.put(batch,
  durable=True)``: per block a copy into a staging buffer, an xxh3 checksum of that copy
  (checked against the caller's header) and the header in front; the writer thread then runs
  one LMDB transaction for the batch and the deletes (the tier's ``batch_bytes`` is sized to
  hold it): LMDB copies each value into its own page buffer, ``pwritev``s the pages,
  ``fdatasync``s, then writes its meta page with ``O_DSYNC`` (see ``tiers/lmdb_store.py``).
  ``put`` returns once that commit is durable.
* **file write** (timed): one buffered ``write`` per block into a file, then one ``fsync``. In
  the steady regime the file is the one written ``keep`` rounds earlier, rewritten in place.
* **LMDB read** (timed): ``DiskTier.get`` of the batch's keys: a ``bytes`` copy of each
  payload out of the map, its checksum verified, straight after the write (page cache warm on
  both sides).
* **file read** (timed): one ``read`` per block, as ``bytes``, from the file just written.

Both sides run in this process, so the disk tier's ``malloc`` setting (``keep_freed_heap`` in
``tiers/lmdb_store.py``) serves both sides' 256 KiB ``bytes`` from a warm heap.

Regimes:

* ``steady`` (the headline ratios): the tier at its working size. Each round evicts the round
  written ``keep`` rounds earlier, so LMDB reuses pages it freed, and the file side rewrites the
  file of that round: neither side allocates new disk blocks or page-cache memory. Warm-up
  rounds (not timed) bring the LMDB file to its steady size first.
* ``growth``: a new tier and fresh keys, a new file per round: both sides allocate page cache
  and disk blocks as they go. On a VM that backs guest memory lazily this measures mostly the
  cost of first-touched memory, which depends on how the kernel sizes page-cache folios: a
  256 KiB ``write`` gets folios of at most 256 KiB, which the kernel carves from memory it has
  used before; LMDB's commit writes up to 64 pages per ``pwritev`` call (~16 MiB here) and
  gets 2 MiB folios, fresh from the host. A third baseline shows it: **file writev**, the same
  bytes into a new file with one ``writev`` per 64 blocks (as LMDB does), then one ``fsync``.
  Reported, but not the headline.

Rates are ``total_bytes`` over the median time of the timed rounds of each measure.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from asymcache.ops.bench._daemon_tiers import BLOCK, LAYOUT, refs
from asymcache.tiers.base import BlockHeader
from asymcache.tiers.disk import DiskTier

_MEASURES = ("write", "read", "file_write", "file_read", "file_writev")
_WRITEV_BLOCKS = 64  # blocks per writev call of the growth regime's extra baseline
_SLACK = 8192  # per block, above its payload: header and LMDB page rounding


def _batch(data: np.ndarray, r: int) -> list[tuple[bytes, BlockHeader, np.ndarray]]:
    """Round ``r``'s items: fresh keys (one sequence per round), the same payload rows."""
    n = len(data)
    blocks = refs(n, r * n * LAYOUT.block_size, "bench-disk")
    return [(b.key, BlockHeader.describe(b.namespace, b.parent or bytes(16), b.position,
                                         LAYOUT.canonical(), data[i]), data[i])
            for i, b in enumerate(blocks)]


def _file_write(path: Path, data: np.ndarray) -> None:
    with open(path, "r+b" if path.exists() else "wb") as fh:
        for row in data:
            fh.write(row)
        fh.flush()
        os.fsync(fh.fileno())


def _file_writev(path: Path, data: np.ndarray) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(0, len(data), _WRITEV_BLOCKS):
            rows = list(data[i:i + _WRITEV_BLOCKS])
            if os.writev(fd, rows) != sum(r.nbytes for r in rows):
                raise RuntimeError(f"short writev to {path}")
        os.fsync(fd)
    finally:
        os.close(fd)


def _file_read(path: Path, n: int) -> list[bytes]:
    with open(path, "rb") as fh:
        return [fh.read(BLOCK) for _ in range(n)]


def _round(tier: DiskTier, data: np.ndarray, items: list, evict: list[bytes],
           path: Path, writev_path: Path | None) -> tuple[float, ...]:
    """Times of one round: (LMDB write, LMDB read, file write, file read, file writev or 0),
    results checked."""
    t0 = time.perf_counter()
    tier.delete(evict)
    ok = tier.put(items, durable=True)
    t1 = time.perf_counter()
    got = tier.get([key for key, _, _ in items])
    t2 = time.perf_counter()
    _file_write(path, data)
    t3 = time.perf_counter()
    back = _file_read(path, len(data))
    t4 = time.perf_counter()
    if not all(ok) or any(g != p.tobytes() for g, (_, _, p) in zip(got, items, strict=True)):
        raise RuntimeError("the disk tier refused a block or returned other bytes")
    if any(len(b) != BLOCK for b in back):
        raise RuntimeError("the plain file returned short blocks")
    if writev_path is None:
        return t1 - t0, t2 - t1, t3 - t2, t4 - t3, 0.0
    _file_writev(writev_path, data)
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, time.perf_counter() - t4


def _regime(workdir: Path, data: np.ndarray, rounds: int, keep: int | None,
            progress: Callable[[str], None], tier_options: dict) -> dict[str, float]:
    """GB/s of each measure (median of the timed rounds) in one regime; ``keep=None`` =
    growth (nothing evicted, a new file per round), else steady with ``keep`` rounds held."""
    n = len(data)
    warm = 1 if keep is None else keep + 2  # steady: the LMDB file reaches its working size
    cap = (keep or rounds + warm) * n * (BLOCK + _SLACK)
    tier = DiskTier(str(workdir / "lmdb"), capacity_bytes=cap, block_bytes=BLOCK,
                    batch_bytes=n * (BLOCK + _SLACK), **tier_options)
    times: dict[str, list[float]] = {k: [] for k in _MEASURES}
    keys: list[list[bytes]] = []
    try:
        for r in range(warm + rounds):
            evict = keys[r - keep] if keep is not None and r >= keep else []
            name = f"plain-{r if keep is None else r % keep}.bin"
            items = _batch(data, r)
            keys.append([key for key, _, _ in items])
            writev = workdir / f"plain-v{r}.bin" if keep is None else None
            spent = _round(tier, data, items, evict, workdir / name, writev)
            if r >= warm:
                for k, dt in zip(_MEASURES, spent, strict=True):
                    times[k].append(dt)
            progress(f"round {r + 1}/{warm + rounds}: LMDB write {spent[0] * 1e3:.0f} ms, "
                     f"file write {spent[2] * 1e3:.0f} ms")
    finally:
        tier.close()
    return {k + "_gbps": n * BLOCK / 1e9 / float(np.median(v)) for k, v in times.items()
            if k != "file_writev" or keep is None}


def disk_tier(workdir: Path, total_bytes: int, rounds: int, keep: int = 2,
              progress: Callable[[str], None] | None = None, **tier_options: object) -> dict:
    """Both regimes (see the module docstring), ``rounds`` timed rounds of ``total_bytes``
    each. The top-level ``*_gbps`` are the steady regime's, ``growth`` holds the other.
    ``tier_options`` go to ``DiskTier`` (e.g. ``writemap=True``). Writes under ``workdir``."""
    if keep < 1 or rounds < 1 or total_bytes < BLOCK:
        raise ValueError(f"need keep >= 1, rounds >= 1 and total_bytes >= {BLOCK}; got "
                         f"{keep}, {rounds}, {total_bytes}")
    data = np.random.default_rng(1).integers(0, 255, (total_bytes // BLOCK, BLOCK),
                                             dtype=np.uint8)
    say = progress or (lambda line: None)
    out: dict = {"keep_rounds": keep, "block_bytes": BLOCK, "batch_bytes": data.nbytes}
    for regime, held in (("steady", keep), ("growth", None)):
        sub = workdir / f"disk-{regime}"
        sub.mkdir(parents=True, exist_ok=True)
        try:
            res = _regime(sub, data, rounds, held,
                          lambda line, g=regime: say(f"{g}: {line}"), dict(tier_options))
        finally:
            shutil.rmtree(sub, ignore_errors=True)
        if regime == "steady":
            out.update(res)
        else:
            out["growth"] = res
    return out
