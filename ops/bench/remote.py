"""``asymcache bench remote``: the remote tier against the bare redis-py cluster client.

On one Redis Cluster (``--nodes``, or three local masters started from ``redis-server``), for
each block size (default 64 KiB and 1 MiB), the same blocks go through:

* **bare** — ``redis.cluster.RedisCluster`` pipelines (``transaction=False``) of SET (new keys),
  then GET, of the raw payloads;
* **tier** — ``RemoteTier.put`` of the same payloads (headers without checksums, so the tier
  computes them as in the daemon) then ``flush``; ``RemoteTier.get``, every value decoded and its
  checksum verified.

After an untimed warm-up, each of ``--rounds`` rounds goes through the blocks one
``--batch-mib`` chunk (one pipeline) at a time, timing bare and tier on the same chunk back to
back, alternating which goes first. Throughput is payload GB/s over all rounds; ``ratio`` is the
median over chunks of bare time / tier time on the same chunk (target >= 0.80 for both
directions and both sizes), so load from other work that drifts during the run cancels out. The
tier's bytes are compared with the originals once per size, outside the timing. Prints a table;
``--json PATH`` writes every figure and sample.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

NAME = "remote"
HELP = "remote tier vs the bare redis-py cluster client: SET/GET of 64 KiB and 1 MiB blocks"
TARGET = 0.8
_LAYOUT = "layers=32;kv_heads=8;head_dim=128;block=16;dtype=bfloat16;tp=0/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", default="", help="host:port,... of an existing cluster "
                        "(default: start three local masters from redis-server)")
    password = os.environ.get("ASYMCACHE_DAEMON_REMOTE__PASSWORD") or os.environ.get(
        "ASYMCACHE_REMOTE_PASSWORD", "")  # the daemon's variable, then its older name
    parser.add_argument("--password", default=password, help="cluster password (AUTH; default "
                        "$ASYMCACHE_DAEMON_REMOTE__PASSWORD)")
    parser.add_argument("--sizes", default="64KiB,1MiB", help="block sizes (default 64KiB,1MiB)")
    parser.add_argument("--mib", type=int, default=64, help="bytes written per size and round")
    parser.add_argument("--batch-mib", type=int, default=16, help="bytes per pipeline or call")
    parser.add_argument("--rounds", type=int, default=7,
                        help="rounds per size, each through every chunk (default 7)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")


def _blocks(size: int, total: int) -> tuple[list[bytes], list[object], list[bytes]]:
    """Keys, headers (checksum 0) and distinct random payloads of ``total`` bytes."""
    import os

    from asymcache.tiers.base import BlockHeader

    n = max(1, total // size)
    payloads = [os.urandom(size) for _ in range(n)]
    keys = [os.urandom(16) for _ in range(n)]
    headers = [BlockHeader(bytes(16), bytes(16), i, _LAYOUT, size, 0) for i in range(n)]
    return keys, headers, payloads


def _chunks(n: int, per: int) -> list[range]:
    return [range(i, min(n, i + per)) for i in range(0, n, per)]


class _Pair:
    """The same blocks through the bare client and through the tier, one chunk (a pipeline's
    worth) at a time, so each tier timing has a bare timing taken right next to it."""

    def __init__(self, client, tier, size: int, args) -> None:
        self.client, self.tier = client, tier
        self.keys, self.headers, self.payloads = _blocks(size, args.mib << 20)
        self.rkeys = [b"bench:bare:" + k.hex().encode() for k in self.keys]
        self.parts = _chunks(len(self.keys), max(1, (args.batch_mib << 20) // size))

    def nbytes(self, part: range) -> int:
        return sum(len(self.payloads[i]) for i in part)

    def set(self, who: str, part: range) -> float:
        """Seconds to store ``part`` as new keys (the old ones are deleted first, untimed)."""
        if who == "bare":
            self._bare(part, "delete")
            start = time.perf_counter()
            pipe = self.client.pipeline(transaction=False)
            for i in part:
                pipe.set(self.rkeys[i], self.payloads[i])
            pipe.execute()
            return time.perf_counter() - start
        self.tier.delete([self.keys[i] for i in part])
        self.tier.flush()
        start = time.perf_counter()
        ok = self.tier.put([(self.keys[i], self.headers[i], self.payloads[i]) for i in part])
        self.tier.flush()
        seconds = time.perf_counter() - start
        if not all(ok) or self.tier.take_failed():
            raise RuntimeError(f"the tier refused or lost puts: {self.tier.error_counts()}")
        return seconds

    def get(self, who: str, part: range) -> float:
        start = time.perf_counter()
        if who == "bare":
            self._bare(part, "get")
            return time.perf_counter() - start
        got = self.tier.get([self.keys[i] for i in part])
        seconds = time.perf_counter() - start
        if any(b is None for b in got):
            raise RuntimeError(f"the tier missed blocks it stored: {self.tier.error_counts()}")
        return seconds

    def _bare(self, part: range, op: str) -> None:
        pipe = self.client.pipeline(transaction=False)
        for i in part:
            getattr(pipe, op)(self.rkeys[i])
        pipe.execute()

    def check_and_clean(self) -> None:
        sample = range(min(8, len(self.keys)))
        if [bytes(b) for b in self.tier.get([self.keys[i] for i in sample])] != \
                [self.payloads[i] for i in sample]:
            raise RuntimeError("the tier returned bytes that differ from what was stored")
        self.tier.delete(self.keys)
        self.tier.flush()
        self._bare(range(len(self.keys)), "delete")


def _size(label: str, size: int, args, client, tier) -> dict:
    pair = _Pair(client, tier, size, args)
    for part in pair.parts:  # warm-up, untimed: the servers' memory grows once
        for who in ("bare", "tier"):
            pair.set(who, part)
    samples: dict[str, list[tuple[float, float, int]]] = {"set": [], "get": []}
    for r in range(args.rounds):
        for j, part in enumerate(pair.parts):
            order = ("bare", "tier") if (r + j) % 2 == 0 else ("tier", "bare")
            for op in ("set", "get"):
                t = {who: getattr(pair, op)(who, part) for who in order}
                samples[op].append((t["bare"], t["tier"], pair.nbytes(part)))
        done = samples["set"][-len(pair.parts):]
        print(f"  {label} round {r + 1}/{args.rounds}: SET bare {sum(b for b, _, _ in done):.3f}"
              f" s, tier {sum(t for _, t, _ in done):.3f} s", flush=True)
    pair.check_and_clean()
    out: dict = {"block_bytes": size, "blocks": len(pair.keys), "samples": samples}
    for op, rows in samples.items():
        gb = sum(n for _, _, n in rows) / 1e9
        out[f"bare_{op}_gbps"] = gb / sum(b for b, _, _ in rows)
        out[f"tier_{op}_gbps"] = gb / sum(t for _, t, _ in rows)
        # each chunk's tier time against the bare time taken next to it: load that drifts
        # (a shared machine) cancels out
        out[f"{op}_ratio"] = statistics.median(b / t for b, t, _ in rows)
    return out


def _table(res: dict) -> None:
    head = ("block", "op", "tier GB/s", "bare GB/s", "ratio", "target")
    rows = [head]
    for label, r in res["sizes"].items():
        for name in ("set", "get"):
            rows.append((label, name.upper(), f"{r[f'tier_{name}_gbps']:.3f}",
                         f"{r[f'bare_{name}_gbps']:.3f}", f"{r[f'{name}_ratio']:.2f}",
                         f">= {TARGET:.2f}"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(v.ljust(w) if i < 2 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(row, widths, strict=True))))
    fig = res.get("load_figures")
    if fig:
        print(f"\nmeasured load cost: latency {fig[0] * 1e3:.3f} ms, "
              f"bandwidth {fig[1] / 1e9:.2f} GB/s")


def _run(args: argparse.Namespace, nodes: list[str]) -> dict:
    from redis.cluster import ClusterNode, RedisCluster

    from asymcache.cacheserver.config import parse_size
    from asymcache.tiers.remote import RemoteTier
    from asymcache.tiers.remote_config import RemoteTierConfig

    cfg = RemoteTierConfig(nodes, 1 << 40, prefix="bench:tier:", password=args.password,
                           socket_timeout_s=5.0, connect_timeout_s=2.0,
                           queue_bytes=2 * (args.mib << 20) + (args.batch_mib << 20),
                           batch_bytes=args.batch_mib << 20, batch_ops=1 << 16)
    tier = RemoteTier(cfg)
    startup = [ClusterNode(h, p) for h, p in cfg.startup_nodes]
    client = RedisCluster(startup_nodes=startup, password=args.password or None)
    try:
        deadline = time.monotonic() + 30
        while not (tier.ready and tier.load_figures()) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not tier.ready:
            raise RuntimeError(f"the remote tier never connected: {tier.link.last_error}")
        res: dict = {"nodes": nodes, "mib": args.mib, "batch_mib": args.batch_mib,
                     "rounds": args.rounds, "target": TARGET, "sizes": {}}
        for label in args.sizes.split(","):
            print(f"{label.strip()} blocks, {args.mib} MiB per round", flush=True)
            res["sizes"][label.strip()] = _size(label.strip(), parse_size(label), args,
                                                client, tier)
        res["load_figures"] = tier.load_figures()
        res["errors"] = tier.error_counts()
    finally:
        tier.close()
        client.close()
    res["min_ratio"] = min(r[f"{n}_ratio"] for r in res["sizes"].values() for n in ("set", "get"))
    return res


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import tempfile
    from pathlib import Path

    from asymcache.ops.bench.redis_cluster import LocalRedisCluster

    local = None
    tmp = Path(tempfile.mkdtemp(prefix="acb-remote-"))
    try:
        if args.nodes:
            nodes = args.nodes.split(",")
        else:
            print("starting a local Redis Cluster of three masters", flush=True)
            local = LocalRedisCluster(tmp, password=args.password).start()
            nodes = local.nodes
        res = _run(args, nodes)
    finally:
        if local is not None:
            local.close()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    _table(res)
    print(f"\nlowest ratio {res['min_ratio']:.2f} (target >= {TARGET:.2f})")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True))
        print(f"wrote {args.json}")
    return 0
