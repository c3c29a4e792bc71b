"""A daemon keeps serving whatever arrives: malformed messages, random bytes, floods."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time

import msgpack
import pytest
import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.protocol.sockets import DealerSocket
from asymcache.engine.client import CacheClient, DaemonError
from asymcache.ops.daemon_process import DaemonProcess
from tests.cacheserver.daemon_fixtures import (
    LAYOUT,
    make_refs,
    payload,
)


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _reply(sock: DealerSocket) -> tuple[int, p.Reply]:
    frames = sock.recv(10.0)
    assert frames is not None, "the daemon did not reply"
    return p.decode_reply(frames)


def _hdr(*items: object) -> bytes:
    return msgpack.packb(list(items), use_bin_type=True)


V = p.PROTOCOL_VERSION
MALFORMED = [
    ([b"\xc1\xc1"], p.ErrorCode.BAD_MESSAGE),  # not msgpack
    ([b""], p.ErrorCode.BAD_MESSAGE),  # empty header
    ([_hdr(1, "ping")], p.ErrorCode.BAD_MESSAGE),  # wrong header shape
    ([_hdr(1, "ping", 9, {})], p.ErrorCode.BAD_VERSION),  # a client of protocol 1
    ([_hdr(V, "explode", 9, {})], p.ErrorCode.UNKNOWN_OP),
    ([_hdr(V, "lookup", 9, {"keys": [1, 2]})], p.ErrorCode.BAD_FIELD),  # wrong types
    ([_hdr(V, "lookup", 9, {"keys": [os.urandom(16)] * 5000})], p.ErrorCode.TOO_LARGE),
    ([_hdr(V, "ping", 9, {}), b"x" * 9000], p.ErrorCode.TOO_LARGE),  # frame over a CPU slot
    ([_hdr(V, "lookup", 9, {"keys": []})], p.ErrorCode.NOT_REGISTERED),  # no HELLO
    ([_hdr(V, "hello", 9, {"engine_id": "e", "model_fingerprint": "m", "gpu_slots": 1,
                           "layout": {"num_layers": 64, "num_kv_heads": 8, "head_dim": 128,
                                      "block_size": 16, "dtype": "float16"}})],
     p.ErrorCode.BAD_LAYOUT),  # a block bigger than the CPU tier's slot
]


@pytest.mark.parametrize(("frames", "code"), MALFORMED, ids=[m[1] + str(i) for i, m in
                                                             enumerate(MALFORMED)])
def test_malformed_request_gets_error_reply_and_next_request_is_served(
    start_daemon, frames: list[bytes], code: p.ErrorCode
) -> None:
    d = start_daemon()
    sock = DealerSocket(zmq.Context.instance(), d.endpoint)
    try:
        sock.send(frames)
        _, err = _reply(sock)
        assert isinstance(err, p.ErrorReply) and err.code == code, err
        sock.send(p.Ping().to_wire(77))
        rid, pong = _reply(sock)
        assert rid == 77 and isinstance(pong, p.PingReply)
    finally:
        sock.close()


def test_hello_with_too_big_a_block_names_the_slot_size(start_daemon) -> None:
    d = start_daemon()
    sock = DealerSocket(zmq.Context.instance(), d.endpoint)
    try:
        sock.send(MALFORMED[-1][0])
        _, err = _reply(sock)
        assert "CPU tier's slots are 8192 bytes" in err.message and "cpu_slot_bytes" in err.message
    finally:
        sock.close()


@pytest.mark.slow
def test_10000_random_messages_leave_the_daemon_alive_with_flat_memory(
    start_daemon
) -> None:
    d = start_daemon()
    rng = random.Random(1234)
    sock = DealerSocket(zmq.Context.instance(), d.endpoint)
    try:
        def burst(n: int) -> int:
            replies = 0
            for i in range(n):
                size = rng.choice((0, 1, 3, 17, 200, 3000))
                sock.send([rng.randbytes(size)] + ([rng.randbytes(50)] if i % 7 == 0 else []))
                if i % 100 == 99:  # keep under max_inflight: collect this burst's replies
                    replies += sum(sock.recv(10.0) is not None for _ in range(100))
            return replies

        assert burst(1000) == 1000  # warm-up: allocator arenas, metric children
        before = _rss_kib(d.pid)
        assert burst(9000) == 9000  # every message gets exactly one reply
        growth = _rss_kib(d.pid) - before
        assert growth < 4096, f"RSS grew by {growth} KiB over 9,000 bad messages"
        sock.send(p.Ping().to_wire(5))
        assert isinstance(_reply(sock)[1], p.PingReply)
    finally:
        sock.close()


def test_a_flood_past_max_inflight_gets_busy_and_every_request_a_reply(
    start_daemon
) -> None:
    d = start_daemon(max_inflight=4)
    sock = DealerSocket(zmq.Context.instance(), d.endpoint)
    try:
        os.kill(d.pid, signal.SIGSTOP)  # let the requests queue up, then arrive as one batch
        try:
            for rid in range(1, 41):
                sock.send(p.Ping().to_wire(rid))
            time.sleep(0.2)
        finally:
            os.kill(d.pid, signal.SIGCONT)
        replies = dict(_reply(sock) for _ in range(40))
        assert sorted(replies) == list(range(1, 41))
        busy = [r for r in replies.values() if isinstance(r, p.ErrorReply)]
        assert busy and all(r.code == p.ErrorCode.BUSY for r in busy)
        assert sum(isinstance(r, p.PingReply) for r in replies.values()) >= 4
        sock.send(p.Ping().to_wire(99))
        assert isinstance(_reply(sock)[1], p.PingReply)
    finally:
        sock.close()


def test_a_second_daemon_on_a_live_endpoint_refuses_to_start(start_daemon, tmp_path) -> None:
    d = start_daemon()
    second = DaemonProcess(d.endpoint, str(tmp_path / "other"), flags={"metrics_port": 0})
    out = subprocess.run(second.command(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and f"another daemon answers on {d.endpoint}" in out.stderr
    sock = DealerSocket(zmq.Context.instance(), d.endpoint)
    try:
        sock.send(p.Ping().to_wire(3))
        assert _reply(sock)[1].epoch == d.start_epoch  # the first one still serves
    finally:
        sock.close()


def test_a_request_over_max_message_bytes_gets_too_large_naming_the_limit(
    start_daemon
) -> None:
    # every frame is within its own limit (a block <= one 8 KiB slot, a 4 KiB header); the
    # five blocks together (20 KiB and a header) are over the message's
    d = start_daemon(max_header_bytes="4KiB", max_message_bytes="20KiB")
    refs = make_refs(5)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=4)
        with pytest.raises(DaemonError) as err:
            c.put(refs, [payload(r) for r in refs])
        assert err.value.code == p.ErrorCode.TOO_LARGE
        assert "max_message_bytes=20480" in err.value.message
        assert c.lookup([r.key for r in refs], lease=False).where == [p.Where.MISS] * 5
        assert c.put(refs[:4], [payload(r) for r in refs[:4]]).stored == [True] * 4
        assert c.stats()["tiers"]["cpu"]["blocks"] == 4
