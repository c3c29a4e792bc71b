"""``asymcache bench wire``: hostile messages at scale beside well-formed clients.

A real daemon (``DaemonProcess``, an ipc path in a temporary folder, small tiers and limits)
gets ``--messages`` hostile messages (``_hostile*.py``: a seeded mix of categories, each with
the answer it must get) from two long-lived sockets (one that never said HELLO, one speaking as
registered engine A) and, for frames that make the daemon drop the connection, fresh sockets;
meanwhile two well-formed clients of their own tenants store and read their blocks, checking
every reply and byte (``_wire_senders.py``). Engine B holds GPU blocks, READY CPU blocks and
unfilled CPU reservations that A's messages aim at.

Measured: replies per category and outcome, unexpected answers (a hostile message answered
otherwise than its catalogue entry says, a stray reply, a good client's failed request or wrong
bytes), the daemon's RSS, open descriptors and threads after the first 10% of messages (warm)
and at the end. At the end: the daemon is alive, STATS counts exactly the good clients' and B's
blocks and the four engines, B still finds its blocks where they were with their bytes and
its reservations. Exit status 1 when anything was unexpected or the daemon died.
"""

from __future__ import annotations

import argparse
import os
import queue
import random
import tempfile
import threading
import time
from pathlib import Path

from asymcache.cacheserver import protocol as p
from asymcache.engine.client import CacheClient
from asymcache.ops.bench import _hostile as h
from asymcache.ops.bench import _hostile_mix as mix
from asymcache.ops.bench import _wire_senders as ws
from asymcache.ops.daemon_process import DaemonProcess

NAME = "wire"
HELP = "hostile and malformed messages at scale beside well-formed clients"
SLOT_BYTES, HEADER_BYTES, MESSAGE_BYTES, MAX_KEYS = 8 << 10, 16 << 10, 64 << 10, 256
FLAGS = {"cpu_bytes": "16MiB", "cpu_slot_bytes": SLOT_BYTES, "disk_bytes": 0,
         "max_keys": MAX_KEYS, "max_header_bytes": HEADER_BYTES,
         "max_message_bytes": MESSAGE_BYTES, "metrics_port": 0, "log_level": "warning",
         "policy": "lru", "lease_timeout_s": 120}
B_GPU_SLOTS = 64


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--messages", type=int, default=100_000,
                        help="hostile messages to send (default 100,000)")
    parser.add_argument("--seed", type=int, default=18, help="seed of the message mix")
    parser.add_argument("--max-seconds", type=float, default=900.0,
                        help="stop sending after this long (default 900)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")


def proc_figures(pid: int) -> dict[str, int]:
    """The daemon's ``rss_bytes``, ``threads`` and ``fds`` now (from ``/proc``); raises
    ``ProcessLookupError`` for a process that is gone or exiting (a zombie has no memory)."""
    out = {"fds": len(os.listdir(f"/proc/{pid}/fd"))}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                out["rss_bytes"] = int(line.split()[1]) * 1024
            elif line.startswith("Threads:"):
                out["threads"] = int(line.split()[1])
    if "rss_bytes" not in out:
        raise ProcessLookupError(f"process {pid} is exiting (no VmRSS in its status)")
    return out


class Victim:
    """Engine B: GPU blocks in slots 8.., READY CPU blocks (PUT) and CPU reservations it has
    not filled; what it holds is recorded to check at the end."""

    def __init__(self, endpoint: str) -> None:
        refs = h.chain_refs("tenant-b", 36)
        self.gpu, self.cpu, self.reserved = refs[:16], refs[16:32], refs[32:]
        self.gpu_slots = list(range(8, 8 + len(self.gpu)))
        self.client = c = CacheClient(endpoint, engine_id="victim-b", timeout_s=10)
        c.hello(h.MODEL, h.LAYOUT, gpu_slots=B_GPU_SLOTS)
        stored = c.commit(self.gpu, self.gpu_slots)
        for half in (self.cpu[:8], self.cpu[8:]):  # 8 blocks per PUT: under max_message_bytes
            stored += c.put(half, [ws.block_bytes(r) for r in half]).stored
        self.cpu_slots = c.lookup([r.key for r in self.cpu], lease=False).slots
        self.reserved_slots = c.reserve_cpu(self.reserved)
        if not all(stored) or min(self.cpu_slots + self.reserved_slots) < 0:
            raise RuntimeError(f"engine B's set-up failed: stored {stored}, CPU slots "
                               f"{self.cpu_slots}, reserved {self.reserved_slots}")

    def keys(self) -> set[bytes]:
        return {r.key for r in self.gpu + self.cpu + self.reserved}

    def intact(self) -> dict[str, bool]:
        """B's blocks where they were, bytes equal, reservations still B's (given back)."""
        c = self.client
        gpu = c.lookup([r.key for r in self.gpu], lease=False)
        cpu = c.lookup([r.key for r in self.cpu], lease=False)
        got = c.get([r.key for r in self.cpu])
        return {
            "b_gpu_blocks_in_place": (list(gpu.where), gpu.slots) == (
                [p.Where.GPU] * len(self.gpu), self.gpu_slots),
            "b_cpu_blocks_in_place": (list(cpu.where), cpu.slots) == (
                [p.Where.CPU] * len(self.cpu), self.cpu_slots),
            "b_cpu_bytes_equal": [bytes(g) if g is not None else None for g in got]
            == [ws.block_bytes(r) for r in self.cpu],
            "b_reservations_kept": c.cancel([r.key for r in self.reserved]) == len(self.reserved),
        }


def _register_a(endpoint: str) -> bytes:
    """Register engine A with the real client, close that client, and return its routing id:
    a raw socket with it speaks in A's session (refreshed by every request it sends)."""
    a = CacheClient(endpoint, engine_id="hostile-a", timeout_s=10, heartbeat=False)
    a.hello(h.MODEL, h.LAYOUT, gpu_slots=h.A_GPU_SLOTS)
    routing_id = a.routing_id
    a.close()
    return routing_id


def _feed(order: list, targets: h.Targets, seed: int, inboxes: dict[str, queue.Queue],
          deadline: float) -> None:
    """Build each message and hand it to its sender (request ids count up over all senders,
    so each socket's ids rise too); then ``None`` to each."""
    rng = random.Random(seed + 1)
    for rid, (name, build) in enumerate(order, start=1):
        if time.monotonic() > deadline:
            break
        sender, frames, reply_rid, expect = build(rng, targets, rid)
        inboxes[sender].put(h.Hostile(name, sender, frames, reply_rid, expect))
    for box in inboxes.values():
        box.put(None)


def _watch(tally: ws.Tally, n: int, pid: int, senders: list[threading.Thread],
           say) -> dict[str, int]:
    """Progress lines every 10%; the daemon's figures once 10% are answered (warm)."""
    warm: dict[str, int] = {}
    t0, step = time.monotonic(), max(1, n // 10)
    next_line = step
    while any(s.is_alive() for s in senders):
        time.sleep(0.05)
        done = tally.done
        if not warm and done >= step:
            warm = proc_figures(pid)
        if done >= next_line:
            say(f"  {done:>9,} / {n:,} messages  {time.monotonic() - t0:7.1f} s  "
                f"unexpected {sum(tally.unexpected.values())}")
            next_line += step
    return warm or proc_figures(pid)


def _end_checks(d: DaemonProcess, goods: list[ws.GoodClient], victim: Victim) -> dict:
    checks: dict[str, object] = {"daemon_alive": d.proc is not None and d.proc.poll() is None}
    if not checks["daemon_alive"]:
        return checks
    stats = goods[0].client.stats()
    want = set().union(*(g.stored for g in goods)) | victim.keys()
    checks["index_blocks"], checks["index_blocks_expected"] = stats["index_blocks"], len(want)
    checks["index_exact"] = stats["index_blocks"] == len(want)
    checks["engines"] = stats["engines"]
    checks["engines_exact"] = stats["engines"] == 4  # A, B and the two good clients
    for g in goods:
        found = g.client.lookup(sorted(g.stored), lease=False).where
        checks[f"{g.name}_blocks_found"] = p.Where.MISS not in found
    checks.update(victim.intact())
    return checks


def run_wire(messages: int, seed: int = 18, max_seconds: float = 900.0, say=print) -> dict:
    """The whole run; the results as a JSON-ready dict (``ok``: nothing unexpected)."""
    t0 = time.monotonic()
    deadline = t0 + max_seconds
    with tempfile.TemporaryDirectory(prefix="acw-") as tmp:
        d = DaemonProcess(f"ipc://{tmp}/d.ipc", f"{tmp}/data", flags=FLAGS,
                          log_path=f"{tmp}/daemon.log")
        d.start()
        try:
            return _run(d, messages, seed, deadline, t0, say)
        finally:
            d.stop()


def _run(d: DaemonProcess, messages: int, seed: int, deadline: float, t0: float, say) -> dict:
    victim = Victim(d.endpoint)
    stop = threading.Event()
    goods = [ws.GoodClient(d.endpoint, f"good-{i}", stop, deadline) for i in (1, 2)]
    targets = h.Targets(victim.gpu, victim.gpu_slots, victim.cpu, victim.cpu_slots,
                        victim.reserved, victim.reserved_slots,
                        [r.key for g in goods for seq in g.seqs for r in seq],
                        MAX_KEYS, HEADER_BYTES, SLOT_BYTES, MESSAGE_BYTES)
    tally = ws.Tally()
    inboxes = {name: queue.Queue(maxsize=256) for name in ("anon", "engine_a", "fresh")}
    senders: list[threading.Thread] = [
        ws.HostileSender(d.endpoint, inboxes["anon"], tally, deadline),
        ws.HostileSender(d.endpoint, inboxes["engine_a"], tally, deadline,
                         _register_a(d.endpoint)),
        ws.FreshSender(d.endpoint, inboxes["fresh"], tally)]
    for t in [*senders, *goods]:
        t.start()
    order = mix.generate(messages, seed, targets)
    feeder = threading.Thread(target=_feed, args=(order, targets, seed, inboxes, deadline),
                              daemon=True)
    feeder.start()
    warm = _watch(tally, messages, d.pid, senders, say)
    end = proc_figures(d.pid)
    stop.set()
    for g in goods:
        g.join(30)
    checks = _end_checks(d, goods, victim)
    for g in goods:
        g.close()
    victim.client.close()
    return _results(messages, tally, goods, warm, end, checks, time.monotonic() - t0,
                    mix.expectations(random.Random(seed), targets))


def _results(messages: int, tally: ws.Tally, goods: list[ws.GoodClient], warm: dict,
             end: dict, checks: dict, wall_s: float, expect: dict) -> dict:
    outcomes = [(o, n) for c in tally.replies.values() for o, n in c.items()]
    unexpected = sum(tally.unexpected.values())
    good_failures = sum(g.failures for g in goods)
    out = {
        "messages": messages, "answered": tally.done,
        "error_replies": sum(n for o, n in outcomes if o not in ("ack", "none", "no reply")
                             and not o.startswith(("ack:", "ok"))),
        "ack_errors": sum(n for o, n in outcomes if o.startswith("ack:")),
        "exposed": sum(n for o, n in outcomes if o == "ok:exposed"),
        "unexpected": unexpected, "unexpected_examples": tally.examples,
        "good_requests": sum(g.requests for g in goods), "good_failures": good_failures,
        "good_errors": [e for g in goods for e in g.errors],
        "rss_warm_bytes": warm["rss_bytes"], "rss_end_bytes": end["rss_bytes"],
        "rss_growth_pct": round(100 * (end["rss_bytes"] / warm["rss_bytes"] - 1), 2),
        "fds_warm": warm["fds"], "fds_end": end["fds"],
        "threads_warm": warm["threads"], "threads_end": end["threads"],
        "wall_s": round(wall_s, 1), "checks": checks,
        "categories": {name: {"expect": expect.get(name, []), "sent": sum(c.values()),
                              "replies": dict(c), "unexpected": tally.unexpected.get(name, 0)}
                       for name, c in sorted(tally.replies.items())},
    }
    passed = [v for k, v in checks.items() if isinstance(v, bool)]
    out["ok"] = (unexpected == 0 and good_failures == 0 and tally.done == messages
                 and all(passed))
    return out


def _print(res: dict) -> None:
    print(f"\n{'category':<26}{'sent':>9}{'unexp.':>8}  replies (outcome: count)")
    for name, c in res["categories"].items():
        shown = ", ".join(f"{o}: {n:,}" for o, n in sorted(c["replies"].items()))
        print(f"{name:<26}{c['sent']:>9,}{c['unexpected']:>8}  {shown}")
    mib = 1 << 20
    print(f"\nmessages {res['messages']:,} (answered as expected or not: {res['answered']:,}); "
          f"error replies {res['error_replies']:,}, ACK refusals {res['ack_errors']:,}, "
          f"unexpected {res['unexpected']}")
    print(f"good clients: {res['good_requests']:,} requests, {res['good_failures']} failed")
    print(f"daemon RSS warm {res['rss_warm_bytes'] / mib:.1f} MiB -> end "
          f"{res['rss_end_bytes'] / mib:.1f} MiB ({res['rss_growth_pct']:+.2f}%); fds "
          f"{res['fds_warm']} -> {res['fds_end']}; threads {res['threads_warm']} -> "
          f"{res['threads_end']}; wall {res['wall_s']} s")
    print("checks: " + ", ".join(f"{k}={v}" for k, v in res["checks"].items()))
    for line in res["unexpected_examples"] + res["good_errors"]:
        print(f"  unexpected: {line}")


def run(args: argparse.Namespace) -> int:
    import json

    print(f"wire: {args.messages:,} hostile messages, seed {args.seed}, beside 2 good clients",
          flush=True)
    res = run_wire(args.messages, args.seed, args.max_seconds,
                   say=lambda line: print(line, flush=True))
    _print(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2, sort_keys=True))
        print(f"\nwrote {args.json}")
    return 0 if res["ok"] else 1
