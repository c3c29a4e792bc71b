"""``asymcache bench remote``: the remote tier against the bare redis-py cluster client.

On one Redis Cluster (``--nodes``, or three local masters started from ``redis-server``), for
each block size (default 64 KiB and 1 MiB), one untimed warm-up round and then ``--rounds``
rounds, alternating which goes first:

* **bare** — ``redis.cluster.RedisCluster`` pipelines (``transaction=False``) of SET, then GET,
  of the raw payloads, ``--batch-mib`` per pipeline;
* **tier** — ``RemoteTier.put`` of the same payloads (headers without checksums, so the tier
  computes them as it does in the daemon) then ``flush``; ``RemoteTier.get`` in the same batches,
  every value decoded and its checksum verified.

Throughput is payload GB/s, median over rounds; ``ratio`` is the median over rounds of tier
throughput / bare throughput measured in the same round (target >= 0.80 for both directions and
both sizes). The tier's bytes are compared with the originals once per size,
outside the timing. Prints a table; ``--json PATH`` writes every figure.
"""

from __future__ import annotations

import argparse
import statistics
import time

NAME = "remote"
HELP = "remote tier vs the bare redis-py cluster client: SET/GET of 64 KiB and 1 MiB blocks"
TARGET = 0.8
_LAYOUT = "layers=32;kv_heads=8;head_dim=128;block=16;dtype=bfloat16;tp=0/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--nodes", default="", help="host:port,... of an existing cluster "
                        "(default: start three local masters from redis-server)")
    parser.add_argument("--password", default="", help="cluster password (AUTH)")
    parser.add_argument("--sizes", default="64KiB,1MiB", help="block sizes (default 64KiB,1MiB)")
    parser.add_argument("--mib", type=int, default=64, help="bytes written per size and round")
    parser.add_argument("--batch-mib", type=int, default=16, help="bytes per pipeline or call")
    parser.add_argument("--rounds", type=int, default=7, help="rounds per size (median)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")


def _blocks(size: int, total: int) -> tuple[list[bytes], list[object], list[bytes]]:
    """Keys, headers (checksum 0) and distinct random payloads of ``total`` bytes."""
    import os

    from tiers.base import BlockHeader

    n = max(1, total // size)
    payloads = [os.urandom(size) for _ in range(n)]
    keys = [os.urandom(16) for _ in range(n)]
    headers = [BlockHeader(bytes(16), bytes(16), i, _LAYOUT, size, 0) for i in range(n)]
    return keys, headers, payloads


def _chunks(n: int, per: int) -> list[range]:
    return [range(i, min(n, i + per)) for i in range(0, n, per)]


def _bare_delete(client, rkeys: list[bytes]) -> None:
    pipe = client.pipeline(transaction=False)
    for rkey in rkeys:
        pipe.delete(rkey)
    pipe.execute()


def _bare(client, keys: list[bytes], payloads: list[bytes], per: int) -> tuple[float, float]:
    """Seconds to SET (new keys, as the tier's), then GET, every payload through bare cluster
    pipelines."""
    rkeys = [b"bench:bare:" + k.hex().encode() for k in keys]
    _bare_delete(client, rkeys)
    start = time.perf_counter()
    for part in _chunks(len(keys), per):
        pipe = client.pipeline(transaction=False)
        for i in part:
            pipe.set(rkeys[i], payloads[i])
        pipe.execute()
    wrote = time.perf_counter()
    for part in _chunks(len(keys), per):
        pipe = client.pipeline(transaction=False)
        for i in part:
            pipe.get(rkeys[i])
        pipe.execute()
    return wrote - start, time.perf_counter() - wrote


def _tier(tier, keys: list[bytes], headers: list, payloads: list[bytes],
          per: int) -> tuple[float, float]:
    """Seconds to put (and flush), then get, every payload through the remote tier."""
    tier.delete(keys)
    tier.flush()
    start = time.perf_counter()
    for part in _chunks(len(keys), per):
        ok = tier.put([(keys[i], headers[i], payloads[i]) for i in part])
        if not all(ok):
            raise RuntimeError(f"the tier refused {ok.count(False)} puts: {tier.error_counts()}")
    tier.flush()
    wrote = time.perf_counter()
    for part in _chunks(len(keys), per):
        got = tier.get([keys[i] for i in part])
        if any(b is None for b in got):
            raise RuntimeError(f"the tier missed blocks it stored: {tier.error_counts()}")
    return wrote - start, time.perf_counter() - wrote


def _size(label: str, size: int, args, client, tier) -> dict:
    keys, headers, payloads = _blocks(size, args.mib << 20)
    per = max(1, (args.batch_mib << 20) // size)
    times: dict[str, list[tuple[float, float]]] = {"bare": [], "tier": []}
    _bare(client, keys, payloads, per)  # warm-up, untimed: the servers' memory grows once
    _tier(tier, keys, headers, payloads, per)
    for r in range(args.rounds):
        order = ("bare", "tier") if r % 2 == 0 else ("tier", "bare")
        for who in order:
            t = (_bare(client, keys, payloads, per) if who == "bare"
                 else _tier(tier, keys, headers, payloads, per))
            times[who].append(t)
        print(f"  {label} round {r + 1}/{args.rounds}: "
              + ", ".join(f"{w} set {times[w][-1][0]:.3f} s get {times[w][-1][1]:.3f} s"
                          for w in ("bare", "tier")), flush=True)
    if [bytes(b) for b in tier.get(keys[:8])] != payloads[:8]:
        raise RuntimeError("the tier returned bytes that differ from what was stored")
    tier.delete(keys)
    tier.flush()
    _bare_delete(client, [b"bench:bare:" + k.hex().encode() for k in keys])
    gb = len(keys) * size / 1e9
    out: dict = {"block_bytes": size, "blocks": len(keys), "seconds": times}
    for d, name in ((0, "set"), (1, "get")):
        for who in ("bare", "tier"):
            out[f"{who}_{name}_gbps"] = gb / statistics.median(t[d] for t in times[who])
        # each round's tier time against the bare time measured next to it: load that drifts
        # between rounds (a shared machine) cancels out
        out[f"{name}_ratio"] = statistics.median(
            b[d] / t[d] for b, t in zip(times["bare"], times["tier"], strict=True))
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

    from cacheserver.config import parse_size
    from tiers.remote import RemoteTier
    from tiers.remote_config import RemoteTierConfig

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

    from tiers.remote_local import LocalRedisCluster

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
