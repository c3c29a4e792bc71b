"""``asymcache bench daemon``: the daemon against plain baselines, side by side in one run.

Rows (targets from issue 3):

* control plane — LOOKUP of 32 blocks over ipc, 1 client and 4 client processes, against a plain
  pyzmq ROUTER echo loop answering with the daemon's reply bytes: ``control_ratio_vs_echo`` (1
  client, target >= 0.5) and ``control_p99_ms`` (1 client, target <= 2 ms). Echo and daemon run
  side by side and are measured in alternating rounds; each figure is the median over the rounds
  (the ratio: of each round's daemon/echo pair), so a shared machine's drifting load hits both
  sides alike. The server's CPU time per request (``server_cpu_us_per_op``) is load-proof;
* CPU tier — 1 MiB and 16 MiB batches of 256 KiB blocks written and read through the shared-memory
  tier with their requests, against numpy copies of the same bytes. Streamed (the requests of
  the next batches in flight while one is copied, ``engine/cpu_stream.py``):
  ``cpu_stream_ratio_vs_memcpy`` per size and direction (target >= 0.8 each; the median of
  ``--stream-rounds`` alternating rounds, each round's figure kept). One batch at a time, each
  request waited for: ``cpu_tier_ratio_vs_memcpy``, total memcpy time over total tier time;
* disk tier — durable LMDB writes and reads against a plain file with fsync, at the tier's working
  size (each round evicts an old one): ``disk_write_ratio_vs_file`` (target >= 0.6),
  ``disk_read_ratio_vs_file`` (target >= 0.8); the same while LMDB and the file grow on fresh
  pages: ``disk_growth_write_ratio_vs_file`` and ``disk_growth_read_ratio_vs_file`` (what each
  side does, and why growth is not the headline: ``ops/bench/_daemon_disk.py``);
* index rebuild at start with ``--rebuild-entries`` entries (default one million);
* Redis SET/GET of the same blocks, for reference, when ``redis-server`` is installed.
"""

from __future__ import annotations

import argparse

NAME = "daemon"
HELP = "daemon vs plain baselines: control plane, CPU tier, disk tier, index rebuild"
_PARTS = ("control", "cpu", "disk", "rebuild", "redis")
_SMALL = {"cpu_bytes": "128MiB", "cpu_slot_bytes": "256KiB", "disk_bytes": 0,
          "metrics_port": 0, "log_level": "warning"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="duration of each control-plane round, per side (default 1)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="alternating echo/daemon control-plane rounds (median; default 5)")
    parser.add_argument("--iters", type=int, default=20,
                        help="CPU-tier batches per size, one at a time")
    parser.add_argument("--stream-mib", type=int, default=96,
                        help="bytes per streamed CPU-tier round and direction, MiB (default 96)")
    parser.add_argument("--stream-rounds", type=int, default=5,
                        help="alternating stream/memcpy rounds (median; default 5)")
    parser.add_argument("--disk-mib", type=int, default=64, help="bytes per disk round, MiB")
    parser.add_argument("--disk-rounds", type=int, default=5, help="disk rounds (median)")
    parser.add_argument("--policy", default=None,
                        help="residency policy of the daemon (default: the daemon's default)")
    parser.add_argument("--rebuild-entries", type=int, default=1_000_000,
                        help="disk entries for the index rebuild (0 = skip)")
    parser.add_argument("--only", action="append", choices=_PARTS, metavar="PART",
                        help=f"run only this part (repeatable; one of {', '.join(_PARTS)})")


def _control(tmp, seconds: float, rounds: int, flags: dict) -> dict:
    import os
    import statistics

    from asymcache.ops.bench import _daemon_control as ctl
    from asymcache.ops.daemon_process import DaemonProcess

    out: dict = {"load_average": list(os.getloadavg())}
    echo = ctl.start_echo(f"ipc://{tmp}/echo.ipc")
    try:
        with DaemonProcess(f"ipc://{tmp}/d.ipc", str(tmp / "data"), flags=flags) as d:
            sides = {"echo": (f"ipc://{tmp}/echo.ipc", echo.pid), "daemon": (d.endpoint, d.pid)}
            for n in (1, 4):
                runs: dict[str, list[dict]] = {"echo": [], "daemon": []}
                for _ in range(rounds):
                    for side, (endpoint, pid) in sides.items():
                        runs[side].append(ctl.run_clients(endpoint, seconds, side, n, pid))
                for side, rs in runs.items():
                    out[f"{side}_{n}"] = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
                out[f"ratio_{n}"] = statistics.median(
                    dr["ops_per_s"] / er["ops_per_s"]
                    for dr, er in zip(runs["daemon"], runs["echo"], strict=True))
    finally:
        echo.terminate()
        echo.wait(10)
    out["load_average_after"] = list(os.getloadavg())
    return out


def _cpu(tmp, args: argparse.Namespace, flags: dict) -> tuple[dict, dict]:
    """(one batch at a time, streamed) per batch size."""
    from asymcache.ops.bench import _daemon_tiers as tiers
    from asymcache.ops.daemon_process import DaemonProcess

    with DaemonProcess(f"ipc://{tmp}/c.ipc", str(tmp / "cdata"), flags=flags) as d:
        single = {f"{mib}MiB": {"mib": mib, **tiers.cpu_tier(d.endpoint, mib << 20, args.iters)}
                  for mib in (1, 16)}
        streamed = {}
        for mib in (1, 16):
            streamed[f"{mib}MiB"] = got = tiers.cpu_stream(
                d.endpoint, mib << 20, args.stream_mib << 20, args.stream_rounds)
            print(f"  streamed {mib} MiB batches, ratio to memcpy per round (write / read): "
                  + ", ".join(f"{r['write_ratio']:.2f} / {r['read_ratio']:.2f}"
                              for r in got["rounds"]), flush=True)
        return single, streamed


def _rebuild(tmp, entries: int, flags: dict) -> dict:
    from asymcache.ops.bench import _daemon_tiers as tiers
    from asymcache.ops.daemon_process import DaemonProcess

    capacity = tiers.fill_disk(tmp / "rdata" / "blocks.lmdb", entries)
    flags = {**flags, "disk_bytes": capacity, "log_level": "info"}
    anon = {}  # the daemon's anonymous memory (heap: index, policies) with an empty disk, then full
    for name, data in (("empty", tmp / "edata"), ("full", tmp / "rdata")):
        log = tmp / f"rebuild-{name}.log"
        daemon = DaemonProcess(f"ipc://{tmp}/r.ipc", str(data), flags=flags, log_path=str(log))
        try:
            daemon.start(timeout_s=900)  # start-up is the measurement: the index rebuild
            anon[name] = tiers.anon_rss_bytes(daemon.pid)
        finally:
            daemon.stop()
    n, seconds = tiers.parse_rebuild(log.read_text())
    return {"entries": n, "seconds": seconds, "entries_per_s": n / max(seconds, 1e-9),
            "anon_rss_empty_bytes": anon["empty"], "anon_rss_full_bytes": anon["full"],
            "bytes_per_block": (anon["full"] - anon["empty"]) / max(n, 1)}


def _table(res: dict) -> list[tuple[str, str, str, str, str]]:
    rows = []
    if res.get("control"):
        rows += _control_rows(res)
    for size, r in (res.get("cpu") or {}).items():
        for way in ("write", "read"):
            rows.append((f"CPU tier {way} {size} batch, one at a time, GB/s",
                         f"{r[way + '_gbps']:.2f}", f"{r['memcpy_gbps']:.2f}",
                         f"{r[way + '_gbps'] / r['memcpy_gbps']:.2f}", ""))
    if res.get("cpu"):
        rows.append(("CPU tier one batch at a time, all sizes", "", "",
                     f"{res['cpu_tier_ratio_vs_memcpy']:.2f}", ""))
    for size, r in (res.get("cpu_stream") or {}).items():
        for way in ("write", "read"):
            gb = r["batches"] * int(size.removesuffix("MiB")) / 1024
            rows.append((f"CPU tier streamed {way}, {size} batches, GB/s",
                         f"{gb / r[f'median_{way}_s']:.2f}",
                         f"{gb / r[f'median_memcpy_{way}_s']:.2f}",
                         f"{r[f'median_{way}_ratio']:.2f}", ">= 0.80"))
    if res.get("disk"):
        rows += _disk_rows(res)
    if res.get("rebuild"):
        r = res["rebuild"]
        rows.append((f"index rebuild, {r['entries']:,} entries", f"{r['seconds']:.2f} s",
                     "", f"{r['entries_per_s']:,.0f}/s", ""))
        rows.append(("index + disk policy memory per block, bytes",
                     f"{r['bytes_per_block']:,.0f}",
                     f"{r['anon_rss_empty_bytes'] / 2**20:,.0f} MiB empty", "", ""))
    if res.get("redis"):
        rows.append(("Redis SET / GET (reference), GB/s",
                     f"{res['redis']['set_gbps']:.2f} / {res['redis']['get_gbps']:.2f}", "", "",
                     ""))
    return rows


def _control_rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    c = res["control"]
    d1, e1, d4, e4 = c["daemon_1"], c["echo_1"], c["daemon_4"], c["echo_4"]
    load = " / ".join(f"{x:.1f}" for x in c["load_average"])
    return [
        ("LOOKUP x32, 1 client, ops/s", f"{d1['ops_per_s']:,.0f}", f"{e1['ops_per_s']:,.0f}",
         f"{res['control_ratio_vs_echo']:.2f}", ">= 0.50"),
        ("LOOKUP x32, 1 client, p50 / p99 ms", f"{d1['p50_ms']:.3f} / {d1['p99_ms']:.3f}",
         f"{e1['p50_ms']:.3f} / {e1['p99_ms']:.3f}", "", "p99 <= 2 ms"),
        ("LOOKUP x32, 1 client, server CPU us/op", f"{d1['server_cpu_us_per_op']:.1f}",
         f"{e1['server_cpu_us_per_op']:.1f}", "", ""),
        ("LOOKUP x32, 4 clients, ops/s", f"{d4['ops_per_s']:,.0f}", f"{e4['ops_per_s']:,.0f}",
         f"{c['ratio_4']:.2f}", ""),
        ("LOOKUP x32, reply bytes", f"{d1['reply_bytes']:.0f}", f"{e1['reply_bytes']:.0f}", "",
         "equal"),
        (f"  (load average at start: {load})", "", "", "", ""),
    ]


def _disk_rows(res: dict) -> list[tuple[str, str, str, str, str]]:
    d, g = res["disk"], res["disk"]["growth"]
    return [
        ("disk write (durable), GB/s", f"{d['write_gbps']:.2f}", f"{d['file_write_gbps']:.2f}",
         f"{res['disk_write_ratio_vs_file']:.2f}", ">= 0.60"),
        ("disk read, GB/s", f"{d['read_gbps']:.2f}", f"{d['file_read_gbps']:.2f}",
         f"{res['disk_read_ratio_vs_file']:.2f}", ">= 0.80"),
        ("disk write, growing (fresh pages), GB/s", f"{g['write_gbps']:.2f}",
         f"{g['file_write_gbps']:.2f}", f"{res['disk_growth_write_ratio_vs_file']:.2f}", ""),
        ("  file written by 16 MiB writev, GB/s", "", f"{g['file_writev_gbps']:.2f}",
         f"{g['write_gbps'] / g['file_writev_gbps']:.2f}", ""),
        ("disk read, growing, GB/s", f"{g['read_gbps']:.2f}", f"{g['file_read_gbps']:.2f}",
         f"{res['disk_growth_read_ratio_vs_file']:.2f}", ""),
    ]


def _summarise(res: dict) -> None:
    c, cpu, disk = res.get("control"), res.get("cpu"), res.get("disk")
    if c:
        res["control_ratio_vs_echo"] = c["ratio_1"]
        res["control_p99_ms"] = c["daemon_1"]["p99_ms"]
        res["control_cpu_us_per_op"] = c["daemon_1"]["server_cpu_us_per_op"]
    if cpu:
        tier_s = sum(r["mib"] / r[w + "_gbps"] for r in cpu.values() for w in ("write", "read"))
        copy_s = sum(2 * r["mib"] / r["memcpy_gbps"] for r in cpu.values())
        res["cpu_tier_ratio_vs_memcpy"] = copy_s / tier_s
    for size, r in (res.get("cpu_stream") or {}).items():
        for way in ("write", "read"):
            res[f"cpu_stream_{way}_{size}_ratio_vs_memcpy"] = r[f"median_{way}_ratio"]
    if res.get("cpu_stream"):
        res["cpu_stream_ratio_vs_memcpy"] = min(
            r[f"median_{way}_ratio"] for r in res["cpu_stream"].values()
            for way in ("write", "read"))
    if disk:
        for prefix, d in (("disk", disk), ("disk_growth", disk["growth"])):
            res[f"{prefix}_write_ratio_vs_file"] = d["write_gbps"] / d["file_write_gbps"]
            res[f"{prefix}_read_ratio_vs_file"] = d["read_gbps"] / d["file_read_gbps"]


def _print_table(rows: list[tuple[str, ...]]) -> None:
    head = ("measure", "asymcache", "baseline", "ratio", "target")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) if i == 0 else v.rjust(w)
                        for i, (v, w) in enumerate(zip(r, widths, strict=True))))


def run(args: argparse.Namespace) -> int:
    import json
    import shutil
    import socket
    import tempfile
    from pathlib import Path

    from asymcache.ops.bench import _daemon_disk as disk
    from asymcache.ops.bench import _daemon_tiers as tiers

    tmp = Path(tempfile.mkdtemp(prefix="acb-"))
    flags = {**_SMALL, **({"policy": args.policy} if args.policy else {})}
    res: dict = {"policy": flags.get("policy", "default")}
    parts = set(args.only or _PARTS)
    try:
        if "control" in parts:
            print(f"control plane: echo and daemon, 1 and 4 clients, {args.rounds} alternating "
                  f"rounds of {args.seconds:g} s each", flush=True)
            res["control"] = _control(tmp, args.seconds, args.rounds, flags)
        if "cpu" in parts:
            print(f"CPU tier: {args.iters} batches of 1 MiB and 16 MiB one at a time, then "
                  f"{args.stream_rounds} rounds of {args.stream_mib} MiB streams", flush=True)
            res["cpu"], res["cpu_stream"] = _cpu(tmp, args, flags)
        if "disk" in parts:
            print(f"disk tier: {args.disk_rounds} timed rounds of {args.disk_mib} MiB, steady "
                  f"and growing", flush=True)
            res["disk"] = disk.disk_tier(tmp, args.disk_mib << 20, rounds=args.disk_rounds,
                                         progress=lambda line: print(f"  {line}", flush=True))
        if "rebuild" in parts and args.rebuild_entries:
            res["rebuild"] = _rebuild(tmp, args.rebuild_entries, flags)
        if "redis" in parts:
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            res["redis"] = tiers.redis_reference(16 << 20, port)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _summarise(res)
    print()
    _print_table(_table(res))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True))
        print(f"\nwrote {args.json}")
    return 0
