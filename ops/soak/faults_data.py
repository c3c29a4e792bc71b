"""The data faults of the soak: bytes that change under the daemon, a disk that refuses writes,
a database file that cannot be opened. Every one must end in a counted miss (recomputed, never
served) or an empty tier, with the daemon serving throughout.

* ``cpu_tamper`` — a READY CPU-tier block of a recent prompt, leased by the probe so that it
  stays in its slot, gets one byte flipped in the daemon's shared-memory slab, as a buggy or
  hostile engine mapping the tier could do. Detected when the daemon's ``cpu`` error
  ``checksum`` count rises: by an engine that read it within 2 s (reported with VERIFY), or
  else by the probe's GET (the daemon checks before serving). Recovered if detected and the
  tampered bytes were never served.
* ``disk_corrupt_value`` — a block that only the disk tier holds, leased by the probe, gets one
  payload byte flipped inside LMDB (a write transaction of this process: the daemon's index and
  the value's header are untouched, as with bit rot). The probe GETs it: recovered if the
  ``disk`` error ``checksum`` count rises and the GET returned nothing or the original bytes
  (the remote tier's copy), never the corrupted ones.
* ``disk_full`` — the daemon's ``RLIMIT_FSIZE`` is lowered to LMDB's two meta pages for
  ``hold_s``: every write that needs a data page fails with EFBIG (as on a full copy-on-write
  file system; LMDB copies every page it changes). Its own log writes fail too while held.
  A durable PUT then must not be durable, the daemon must count ``full`` (or ``io``) errors and
  keep answering PING; recovered when, after the limit is lifted, a durable PUT is durable.
* ``disk_damaged_file`` — the daemon is stopped, ``data.mdb``'s meta pages are overwritten, the
  daemon is started: it must serve within 10 s with an empty disk tier (the damaged folder moved
  aside, ``damaged_file`` counted), engines back within 5 s, and a durable PUT must work.
"""

from __future__ import annotations

import glob
import os
import random
import resource
import time
from itertools import islice

from asymcache.cacheserver.protocol import Where
from asymcache.cacheserver.protocol.sockets import ping
from asymcache.ops.soak.faults import FaultContext, fault, restart_measured, wait_for
from asymcache.ops.soak.probe import Probe
from asymcache.ops.soak.stack import Stack

FLIP_AT = 100  # byte of the block flipped (from the start of a CPU slot, from a value's end)
SAMPLE_KEYS = 512
CORRUPT_ATTEMPTS = 3  # blocks corrupted until one is read from the disk (others may be promoted)


def _errors(stack: Stack, tier: str, *kinds: str) -> int:
    errors = stack.daemon_stats()["tiers"][tier]["errors"]
    return sum(errors.get(k, 0) for k in kinds)


def _cpu_block(ctx: FaultContext, probe: Probe) -> tuple[bytes, int, int] | None:
    """(key, CPU slot, tenant) of a READY CPU-tier block of a recent prompt, or None."""
    tenants = list(range(len(ctx.stack.salts)))
    random.shuffle(tenants)
    for tenant in tenants:
        for p in reversed(ctx.mix.recent(tenant)):
            keys = probe.prompt_keys(ctx.stack.salts[tenant], p.tokens)
            for key, where, slot, checksum in probe.where(keys):
                if where == Where.CPU and checksum != 0:
                    return key, slot, tenant
    return None


@fault("cpu_tamper")
def cpu_tamper(ctx: FaultContext) -> dict:
    stack, lim = ctx.stack, ctx.cfg.limits
    with Probe(stack.endpoint, stack.keys) as probe:
        key, slot, tenant = _leased_cpu_block(ctx, probe)
        try:
            before = _errors(stack, "cpu", "checksum")
            view = probe.client.cpu_slot(slot)
            view[FLIP_AT] ^= 0xFF
            tampered = bytes(view[:probe.block_bytes])
            view.release()
            t0 = time.monotonic()
            by_engine = wait_for(lambda: _errors(stack, "cpu", "checksum") > before, 2.0)
            got = probe.get(key)
            detected = wait_for(lambda: _errors(stack, "cpu", "checksum") > before,
                                lim.detect_s)
            took = time.monotonic() - t0
        finally:
            probe.release(key)
    served = got is not None and got == tampered[:len(got)]
    return {"tenant": tenant, "slot": slot, "detected": detected is not None,
            "detected_by": "engine" if by_engine is not None else "daemon (probe GET)",
            "served_tampered": served, "get_returned": "miss" if got is None else "bytes",
            "recovered": detected is not None and not served,
            "recovery_s": round(took, 3) if detected is not None else None}


def _leased_cpu_block(ctx: FaultContext, probe: Probe, tries: int = 20
                      ) -> tuple[bytes, int, int]:
    """A READY CPU-tier block of a recent prompt, leased by the probe: (key, slot, tenant)."""
    for _ in range(tries):
        found = _cpu_block(ctx, probe)
        if found is None:
            break
        key, slot, tenant = found
        where, held = probe.hold(key)
        if where == Where.CPU and held == slot:
            return key, slot, tenant
        probe.release(key)  # it moved between the two LOOKUPs: another one
    raise RuntimeError("no READY CPU-tier block of a recent prompt could be leased")


def _corrupt_one(ctx: FaultContext, probe: Probe) -> tuple[bytes, bytes, bytes]:
    """Flip a payload byte of a block only the disk tier holds: (key, payload, corrupted)."""
    import lmdb

    env = lmdb.open(ctx.stack.disk_path, map_size=ctx.cfg.disk_map_bytes, subdir=True,
                    max_dbs=3)
    try:
        data = env.open_db(b"data", create=False)
        with env.begin(db=data) as txn:
            keys = [bytes(k) for k in islice(txn.cursor().iternext(values=False), 8192)]
        sample = random.sample(keys, min(SAMPLE_KEYS, len(keys)))
        on_disk = [k for k, where, _, _ in probe.where(sample) if where == Where.DISK]
        key = _lease_on_disk(probe, on_disk)
        if key is None:
            raise RuntimeError(f"none of {len(sample)} stored keys could be leased on disk")
        with env.begin(db=data, write=True) as txn:
            value = txn.get(key)
            if value is None:
                raise RuntimeError("the chosen block left the disk tier meanwhile")
            bad = bytearray(value)
            bad[-FLIP_AT] ^= 0xFF
            txn.put(key, bytes(bad))
    finally:
        env.close()
    n = probe.block_bytes
    return key, bytes(value[-n:]), bytes(bad[-n:])


def _lease_on_disk(probe: Probe, keys: list[bytes]) -> bytes | None:
    for key in keys:
        if probe.hold(key)[0] == Where.DISK:
            return key
        probe.release(key)
    return None


@fault("disk_corrupt_value")
def disk_corrupt_value(ctx: FaultContext) -> dict:
    stack, lim = ctx.stack, ctx.cfg.limits
    with Probe(stack.endpoint, stack.keys) as probe:
        attempts = 0
        while attempts < CORRUPT_ATTEMPTS:
            attempts += 1
            before = _errors(stack, "disk", "checksum")
            key, original, corrupted = _corrupt_one(ctx, probe)
            try:
                t0 = time.monotonic()
                got = probe.get(key)
                detected = wait_for(lambda n=before: _errors(stack, "disk", "checksum") > n,
                                    lim.detect_s)
                took = time.monotonic() - t0
            finally:
                probe.release(key)
            if detected is not None or (got is not None and got != original):
                break
            # an engine promoted the block meanwhile: the GET was served from the CPU tier
            # and the corrupted value never read; corrupt another block
        again = probe.where([key])[0][1]
    served = got is not None and got == corrupted
    sound = got is None or got == original
    return {"detected": detected is not None, "served_corrupted": served, "attempts": attempts,
            "get_returned": "miss" if got is None else ("original" if sound else "OTHER"),
            "after": again.name, "recovered": detected is not None and sound and not served,
            "recovery_s": round(took, 3) if detected is not None else None}


@fault("disk_full")
def disk_full(ctx: FaultContext) -> dict:
    stack, cfg = ctx.stack, ctx.cfg
    assert stack.daemon is not None
    pid = stack.daemon.pid
    soft, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    before = _errors(stack, "disk", "full", "io")
    with Probe(stack.endpoint, stack.keys) as probe:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (2 * os.sysconf("SC_PAGE_SIZE"), hard))
        try:
            t0 = time.monotonic()
            durable_while_full = probe.durable_put()
            missed = 0
            while time.monotonic() - t0 < cfg.hold_s:
                missed += ping(stack.endpoint, timeout_s=1.0) is None
                time.sleep(0.25)
            refused = _errors(stack, "disk", "full", "io") - before
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        back = wait_for(probe.durable_put, cfg.limits.detect_s * 3, every_s=0.2)
    injected = refused > 0 and not durable_while_full
    return {"held_s": cfg.hold_s, "write_errors_counted": refused,
            "durable_while_full": durable_while_full, "pings_missed_while_full": missed,
            "injected": injected,
            "recovered": injected and missed == 0 and back is not None,
            "recovery_s": None if back is None else round(back, 3)}


def _overwrite_meta_pages(path: str) -> None:
    import lmdb

    env = lmdb.open(path, readonly=True, lock=False, max_dbs=3)
    try:
        size = env.stat()["psize"]
    finally:
        env.close()
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.write(b"\xa5" * 2 * size)


@fault("disk_damaged_file")
def disk_damaged_file(ctx: FaultContext) -> dict:
    stack = ctx.stack
    got = restart_measured(ctx, kill=False,
                           while_down=lambda: _overwrite_meta_pages(stack.disk_path))
    counted = stack.daemon_stats()["tiers"]["disk"]["errors"].get("damaged_file", 0)
    aside = glob.glob(glob.escape(stack.disk_path) + ".damaged-*")
    with Probe(stack.endpoint, stack.keys) as probe:
        fresh = probe.durable_put()
    got.update(damaged_file_counted=counted, moved_aside=bool(aside), fresh_tier_durable=fresh)
    got["recovered"] = bool(got["recovered"] and counted >= 1 and aside and fresh)
    return got
