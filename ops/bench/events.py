"""``asymcache bench events``: a real daemon's KV events under a seeded mixed workload, read
live by ``engine.kv_events`` (docs/daemon.md, "KV events"). Goal: every block stored or removed
appears in the stream in order, none lost with the replay endpoint, and the consumer's index
equals the daemon's at the end. Tiny tiers keep evictions and demotions to disk going; the
consumer throws a share of live batches away unread (``--drop``) so that gap filling is used.

Checked: per topic, sequence numbers rise and none is missing; no block is stored twice in a
place or removed from where it is not; GET returns the bytes written; at the end each key's
highest place in the index equals each engine's LOOKUP, and the index's counts equal STATS.
The daemon keeps its default replay buffer (``--replay-bytes``), so the final ``catch_up()``
replays many thousands of batches through the paged replay.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import time

NAME = "events"
HELP = "mixed workload with a live KV-events consumer: stream complete, index equals daemon's"
_FLAGS = {"cpu_bytes": "256KiB", "cpu_slot_bytes": "8KiB", "disk_bytes": "2MiB",
          "disk_map_bytes": "16MiB", "policy": "lru", "log_level": "warning", "metrics_port": 0}
_MODEL, _SALTS, _SEQS, _GPU_SLOTS = "bench-events", ("", "a", "b"), 32, 8
_OPS = ("commit", "evict", "put", "promote", "release", "pin", "unpin", "get", "lookup")
_MAX_OPS_PER_S, _DRAIN_EVERY, _PROGRESS_S = 5000, 16, 5.0
_CHECKS = ("restarts", "lost_batches", "order_violations", "stream_anomalies",
           "lossless_failures", "lookup_mismatches", "count_mismatches")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=float, default=10.0, help="duration (default 10)")
    parser.add_argument("--seconds", type=float, help="duration in seconds (overrides --minutes)")
    parser.add_argument("--seed", type=int, default=0, help="workload seed (default 0)")
    parser.add_argument("--engines", type=int, default=2, help="engines registered (default 2)")
    parser.add_argument("--drop", type=float, default=0.05,
                        help="chance per drain that a live batch is thrown away (default 0.05)")
    parser.add_argument("--replay-bytes", default="64MiB", help="the daemon's replay buffer")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")


def _sequences() -> tuple[object, list[list]]:
    """The layout, and per salt (topic) ``_SEQS`` chains of 6 blocks (``i``, ``i + 4`` share
    two)."""
    from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id
    from asymcache.cacheserver.protocol import BlockRef

    layout = KVLayout(num_layers=2, num_kv_heads=2, head_dim=16, block_size=16, dtype="float16")
    out, bs = [], layout.block_size
    for salt in _SALTS:
        ns = namespace_id(_MODEL, layout, salt)
        for i in range(_SEQS):
            keys = block_keys(ns, [i % 4] * 2 * bs + [1000 + i] * 4 * bs, bs)
            out.append([BlockRef(k, ns, keys[j - 1] if j else None, j)
                        for j, k in enumerate(keys)])
    return layout, out


def _payload(key: bytes, size: int) -> bytes:
    seed = hashlib.blake2b(key, digest_size=32).digest()
    return (seed * (size // 32 + 1))[:size]


class _Engine:
    """One registered engine, its GPU slots (slot -> key) and what it pinned."""

    def __init__(self, endpoint: str, i: int, layout) -> None:
        from asymcache.engine.client import CacheClient

        self.client = CacheClient(endpoint, engine_id=f"bench-{i}", timeout_s=10,
                                  heartbeat=False)
        self.client.hello(_MODEL, layout, gpu_slots=_GPU_SLOTS)
        self.place, self.gpu, self.pinned = f"GPU:bench-{i}", {}, []


class _Consumer:
    """The live subscriber, its index, and the stream's checks."""

    def __init__(self, endpoint: str, replay: str) -> None:
        from asymcache.engine.kv_events import EventSubscriber
        from asymcache.ops.kv_events import HostIndex

        self.sub, self.index, self.last = EventSubscriber(endpoint, replay), HostIndex(), {}
        self.batches = self.events = self.max_seq = self.disorder = self.anomalies = 0

    def drain(self, seconds: float = 0.001, final: bool = False, lose: bool = False) -> None:
        if lose and self.sub.sub.poll(0):  # a live batch lost on its way: replay refills it
            self.sub.sub.recv_multipart()
        for batch in self.sub.catch_up() if final else self.sub.batches(seconds):
            self.disorder += batch.seq <= self.last.get(batch.topic, -1)
            self.last[batch.topic] = batch.seq
            self.batches, self.max_seq = self.batches + 1, max(self.max_seq, batch.seq)
            for event in batch.events:
                self.events += 1
                self.anomalies += _anomalous(self.index.places, event)
                self.index.apply(event)


def _anomalous(places: dict, event: dict) -> int:
    """Blocks stored where they already were, or removed from where they were not."""
    if event["type"] == "AllBlocksCleared":
        return 0
    place = f"GPU:{event['engine_id']}" if event["medium"] == "GPU" else event["medium"]
    held = [place in places.get(k, ()) for k in event["block_hashes"]]
    return sum(held) if event["type"] == "BlockStored" else held.count(False)


def _step(op: str, eng: _Engine, rng: random.Random, seqs: list, by_key: dict, size: int) -> int:
    """One operation; returns how many GET blocks came back with the wrong bytes."""
    c, s = eng.client, rng.choice(seqs)
    keys = [r.key for r in s]
    if op == "commit":
        free = [slot for slot in range(_GPU_SLOTS) if slot not in eng.gpu]
        refs = [r for r in s if r.key not in eng.gpu.values()][:len(free)]
        ok = c.commit(refs, free[:len(refs)]) if refs else []
        eng.gpu.update((slot, r.key) for slot, r, a in zip(free, refs, ok, strict=False) if a)
    elif op == "evict":
        for v in c.allocate(rng.randint(1, 4)):
            eng.gpu.pop(v.gpu_slot, None)
            if v.demote_to >= 0:
                c.cpu_slot(v.demote_to)[:size] = _payload(v.key, size)
                c.commit([by_key[v.key]], [v.demote_to], tier="cpu")
    elif op == "put":
        c.put(s, [_payload(k, size) for k in keys], durable=rng.random() < 0.2)
    elif op in ("promote", "lookup"):
        getattr(c, op)(keys, lease=rng.random() < 0.5)
    elif op == "release":
        c.release(everything=True)
    elif op == "pin":
        keys = keys[:rng.randint(1, 6)]
        c.pin(keys, ttl_s=rng.uniform(0.05, 0.5))
        eng.pinned += keys
    elif op == "unpin":
        c.unpin(eng.pinned)
        eng.pinned.clear()
    else:
        picked = rng.sample(list(by_key), 8)
        return sum(b is not None and bytes(b[:size]) != _payload(k, size)
                   for k, b in zip(picked, c.get(picked), strict=True))
    return 0


def _compare(engines: list[_Engine], index, keys: list[bytes], res: dict) -> None:
    """LOOKUP against the index's highest place per key and engine; STATS against its counts."""
    from asymcache.cacheserver.protocol import Where

    res["lookup_mismatches"] = 0
    for eng in engines:
        order = ((eng.place, Where.GPU), ("CPU", Where.CPU), ("DISK", Where.DISK))
        for key, where in zip(keys, eng.client.lookup(keys, lease=False).where, strict=True):
            places = index.places.get(key, ())
            res["lookup_mismatches"] += where != next((w for p, w in order if p in places),
                                                      Where.MISS)
    stats = res["daemon_stats"] = engines[0].client.stats()["tiers"]
    mine = {"gpu": sum(index.count(e.place) for e in engines), "cpu": index.count("CPU"),
            "disk": index.count("DISK")}
    res["tiers"] = {t: {"daemon": stats[t]["blocks"], "consumer": n} for t, n in mine.items()}
    res["count_mismatches"] = sum(t["daemon"] != t["consumer"] for t in res["tiers"].values())


def _workload(args, seconds: float, engines: list[_Engine], con: _Consumer, res: dict,
              seqs: list[list], size: int) -> None:
    rng, by_key = random.Random(args.seed), {r.key: r for s in seqs for r in s}
    start = shown = time.monotonic()
    while time.monotonic() - start < seconds and res["ops"] < seconds * _MAX_OPS_PER_S:
        res["lossless_failures"] += _step(rng.choice(_OPS), rng.choice(engines), rng, seqs,
                                          by_key, size)
        res["ops"] += 1
        if res["ops"] % _DRAIN_EVERY == 0:
            con.drain(lose=rng.random() < args.drop)
        if time.monotonic() - shown >= _PROGRESS_S:
            shown = time.monotonic()
            print(f"  {shown - start:5.0f} s  {res['ops']:,} ops  {con.events:,} events  "
                  f"{con.batches:,} batches  {con.sub.gaps_filled:,} gaps filled", flush=True)
    for eng in engines:
        eng.client.unpin(eng.pinned)
        eng.client.release(everything=True)
    engines[0].client.flush()
    con.drain(0.5)
    con.drain(final=True)
    res["seconds"] = round(time.monotonic() - start, 1)
    _compare(engines, con.index, list(by_key), res)


def _run(tmp, args: argparse.Namespace, seconds: float) -> dict:
    from asymcache.ops.daemon_process import DaemonProcess

    ev, rp = f"ipc://{tmp}/ev.ipc", f"ipc://{tmp}/rp.ipc"
    flags = {**_FLAGS, "events_endpoint": ev, "events_replay_endpoint": rp,
             "events_replay_bytes": args.replay_bytes}
    res, (layout, seqs) = {"ops": 0, "lossless_failures": 0}, _sequences()
    with DaemonProcess(f"ipc://{tmp}/d.ipc", str(tmp / "data"), flags=flags) as d:
        con, engines = _Consumer(ev, rp), []
        try:
            engines += [_Engine(d.endpoint, i, layout) for i in range(args.engines)]
            _workload(args, seconds, engines, con, res, seqs, layout.bytes_per_block)
        finally:
            for eng in engines:
                eng.client.close()
            con.sub.close()
    res.update(events=con.events, batches=con.batches, gaps_filled=con.sub.gaps_filled,
               restarts=con.sub.restarts, order_violations=con.disorder,
               stream_anomalies=con.anomalies, lost_batches=con.max_seq + 1 - con.batches)
    res["mismatches"] = sum(res[k] for k in _CHECKS)
    return res


def _print(res: dict) -> None:
    rows = [(k.replace("_", " "), f"{res[k]:,}") for k in (
        "seconds", "ops", "events", "batches", "gaps_filled", *_CHECKS, "mismatches")]
    rows += [(f"{t.upper()} blocks, daemon / consumer", f"{v['daemon']:,} / {v['consumer']:,}")
             for t, v in res["tiers"].items()]
    rows += [(f"{t.upper()} evictions / demotions", f"{s['evictions']:,} / {s['demotions']:,}")
             for t, s in res["daemon_stats"].items() if t in ("cpu", "disk")]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name.ljust(width)}  {value.rjust(20)}")


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import tempfile
    from pathlib import Path

    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    print(f"events: {seconds:g} s mixed run, {args.engines} engines, seed {args.seed}",
          flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="acbe-"))
    try:
        res = _run(tmp, args, seconds)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    _print(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True))
        print(f"\nwrote {args.json}")
    return 0 if res["mismatches"] == 0 else 1
