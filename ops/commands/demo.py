"""``asymcache demo``: start a daemon, run a client round trip of the main ops, print its stats.

Everything is temporary: an ipc endpoint and a data directory under a fresh temp directory,
removed at the end; the daemon is stopped (SIGTERM, flushing its disk writes) also on Ctrl-C or
an error. Two engines take part, so the demo also shows a block shared through the CPU tier.
"""

from __future__ import annotations

import argparse

NAME = "demo"
HELP = "start a temporary daemon, run a client round trip, print the daemon's stats"
_LAYOUT = {"num_layers": 2, "num_kv_heads": 2, "head_dim": 32, "block_size": 16,
           "dtype": "float16"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--keep", action="store_true", help="keep the temp directory (logs)")


def _step(name: str, result: object) -> None:
    print(f"  {name:<44} {result}")


def round_trip(endpoint: str) -> dict:
    """The engine side of the demo; returns the daemon's final STATS."""
    import os

    from cacheserver.blocks import KVLayout, block_keys, namespace_id
    from cacheserver.protocol import BlockRef
    from engine.client import CacheClient

    layout = KVLayout(**_LAYOUT)
    n = layout.bytes_per_block
    ns = namespace_id("demo-model", layout)
    keys = block_keys(ns, list(range(6 * layout.block_size)), layout.block_size)
    refs = [BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]
    blocks = {k: os.urandom(n) for k in keys}  # stand-ins for KV bytes
    with CacheClient(endpoint, engine_id="demo-a") as a, \
            CacheClient(endpoint, engine_id="demo-b") as b:
        reg = a.hello("demo-model", layout, gpu_slots=4)
        _step("HELLO engine a (4 GPU slots)", f"epoch {reg.epoch}, CPU tier "
              f"{reg.cpu_num_slots} x {reg.cpu_slot_bytes} B")
        _step("LOOKUP 6 blocks", [w.name for w in a.lookup(keys, lease=False).where])
        _step("COMMIT blocks 0-3 to GPU slots 0-3", a.commit(refs[:4], [0, 1, 2, 3]))
        victims = a.allocate(2)
        _step("ALLOCATE 2 more GPU slots", [(v.gpu_slot, v.demote_to) for v in victims])
        by_key = {r.key: r for r in refs}
        for v in victims:  # the engine copies the victims' bytes into the CPU tier itself
            a.cpu_slot(v.demote_to)[:n] = blocks[v.key]
        _step("  demote them into CPU slots, COMMIT cpu", a.commit(
            [by_key[v.key] for v in victims], [v.demote_to for v in victims], tier="cpu"))
        put = a.put(refs[4:], [blocks[k] for k in keys[4:]], durable=True)
        _step("PUT blocks 4-5 (durable)", f"stored {put.stored}, durable {put.durable}")
        b.hello("demo-model", layout, gpu_slots=4)
        found = b.lookup(keys)
        _step("HELLO engine b, LOOKUP (leases)", [w.name for w in found.where])
        shared = [bytes(b.cpu_slot(s)[:n]) == blocks[k]
                  for k, s, w in zip(keys, found.slots, found.where, strict=True)
                  if w.name == "CPU"]
        _step("  b reads CPU slots zero-copy, bytes equal", shared)
        got = b.get(keys)
        gpu_only = [i for i, k in enumerate(keys[:4]) if k not in {v.key for v in victims}]
        _step(f"GET 6 blocks ({gpu_only} only in a's GPU)", [
            g is not None and bytes(g) == blocks[k] for g, k in zip(got, keys, strict=True)])
        _step("PROMOTE (DISK -> CPU)", b.promote(keys[4:]))
        _step("PIN with 60 s TTL / UNPIN", (a.pin(keys, ttl_s=60), a.unpin(keys)))
        _step("RELEASE b's leases", b.release(everything=True))
        _step("FLUSH: blocks on disk", a.flush())
        return a.stats()


def run(args: argparse.Namespace) -> int:
    import shutil
    import tempfile
    from pathlib import Path

    from cacheserver.launch import DaemonProcess
    from ops.commands.stats import format_stats

    tmp = Path(tempfile.mkdtemp(prefix="asymcache-demo-"))
    daemon = DaemonProcess(f"ipc://{tmp}/daemon.ipc", str(tmp / "data"), log_path=str(
        tmp / "daemon.log"), flags={"cpu_bytes": "4MiB", "cpu_slot_bytes": "64KiB",
                                    "disk_bytes": "64MiB", "metrics_port": 0})
    try:
        reply = daemon.start()
        print(f"daemon pid {daemon.pid} on {daemon.endpoint} (epoch {reply.epoch})")
        stats = round_trip(daemon.endpoint)
        print("\ndaemon stats:")
        print(format_stats(stats))
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping the daemon")
        return 130
    finally:
        code = daemon.stop()
        print(f"daemon stopped (exit status {code})")
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
