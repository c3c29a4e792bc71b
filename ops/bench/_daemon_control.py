"""Control-plane workload of ``asymcache bench daemon``: LOOKUP of 32 blocks over ipc.

Each client is a separate process (``python -m asymcache.ops.bench._daemon_control worker ...``)
that sends one pre-encoded request, waits for the reply, and repeats for a fixed time; it prints its
count, latency percentiles and the size of the replies it got as one JSON line. The baseline is a
plain pyzmq ROUTER echo loop (``... echo ENDPOINT``) over ipc that answers every request with the
daemon's reply bytes, so both sides move the same bytes, over the same socket types, through the
same client loop (the worker reports the reply size so the benchmark can check it).
:func:`server_cpu_s` reads a server process's CPU time, for the CPU spent per request.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id
from asymcache.cacheserver.protocol.sockets import DealerSocket

N_BLOCKS = 32
LAYOUT = KVLayout(num_layers=4, num_kv_heads=2, head_dim=64, block_size=16, dtype="float16")


def _refs(idx: int) -> list[p.BlockRef]:
    ns = namespace_id(f"bench-{idx}", LAYOUT)
    keys = block_keys(ns, np.arange(N_BLOCKS * LAYOUT.block_size), LAYOUT.block_size)
    return [p.BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]


def reply_bytes() -> bytes:
    """The daemon's reply to the benchmark's LOOKUP (32 GPU hits), for the echo server."""
    return bytes(p.LookupReply(where=[1] * N_BLOCKS, slots=list(range(N_BLOCKS))).to_wire(1)[0])


def _register(sock: DealerSocket, refs: list[p.BlockRef], idx: int) -> None:
    for i, msg in enumerate((
        p.Hello(engine_id=f"bench-{idx}", model_fingerprint="bench", layout=LAYOUT.to_dict(),
                gpu_slots=N_BLOCKS),
        p.Commit(tier="gpu", blocks=refs, slots=list(range(N_BLOCKS))),
    )):
        sock.send(msg.to_wire(100 + i))
        frames = sock.recv(10.0)
        if frames is None or isinstance(p.decode_reply(frames)[1], p.ErrorReply):
            raise RuntimeError(f"daemon refused the benchmark's {msg.OP.upper()}")


def worker(endpoint: str, seconds: float, kind: str, idx: int) -> dict:
    """Run the request loop; returns ops, seconds and p50/p99 latency in ms."""
    ctx = zmq.Context()
    sock = DealerSocket(ctx, endpoint, routing_id=f"bench-{idx}".encode())
    refs = _refs(idx)
    if kind == "daemon":
        _register(sock, refs, idx)
    request = p.Lookup(keys=[r.key for r in refs], lease=False).to_wire(1)
    lat: list[float] = []
    reply_len = 0
    t_start = time.perf_counter()
    end = t_start + seconds
    while (t0 := time.perf_counter()) < end:
        sock.send(request)
        if (frames := sock.recv(5.0)) is None:
            break
        lat.append(time.perf_counter() - t0)
        reply_len = len(frames[0])
    elapsed = time.perf_counter() - t_start
    sock.close()
    ctx.term()
    ms = np.asarray(lat) * 1e3
    return {"ops": len(lat), "seconds": elapsed, "p50_ms": float(np.percentile(ms, 50)),
            "p99_ms": float(np.percentile(ms, 99)), "reply_bytes": reply_len}


def echo(endpoint: str) -> None:
    """A plain ROUTER loop answering every message with the daemon's reply size."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    reply = reply_bytes()
    while True:
        msg = sock.recv_multipart()
        sock.send_multipart([msg[0], reply])


def run_clients(endpoint: str, seconds: float, kind: str, n: int, server_pid: int) -> dict:
    """``n`` client processes at once against the server process ``server_pid``: total ops/s,
    the first client's percentiles and reply size, and the server's CPU time per request (its
    I/O thread included) in microseconds."""
    cpu0 = server_cpu_s(server_pid)
    procs = [subprocess.Popen([sys.executable, "-m", "asymcache.ops.bench._daemon_control",
                               "worker", endpoint, str(seconds), kind, str(i)],
                              stdout=subprocess.PIPE, text=True) for i in range(n)]
    results = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"benchmark client exited with {proc.returncode}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    ops_s = sum(r["ops"] / r["seconds"] for r in results)
    cpu_us = (server_cpu_s(server_pid) - cpu0) / max(1, sum(r["ops"] for r in results)) * 1e6
    return {"ops_per_s": ops_s, "p50_ms": results[0]["p50_ms"], "p99_ms": results[0]["p99_ms"],
            "reply_bytes": results[0]["reply_bytes"], "server_cpu_us_per_op": cpu_us}


def server_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_echo(endpoint: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "asymcache.ops.bench._daemon_control", "echo",
                             endpoint])
    time.sleep(0.5)  # the echo loop binds at once; no readiness protocol to wait for
    return proc


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        print(json.dumps(worker(sys.argv[2], float(sys.argv[3]), sys.argv[4],
                                int(sys.argv[5]))))
    elif sys.argv[1] == "echo":
        echo(sys.argv[2])
