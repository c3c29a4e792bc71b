"""Session ops against a real daemon process: CANCEL gives CPU reservations back, and HELLO and
PING replies say (when asked with ``info``) which tiers the daemon has and its remote load."""

from __future__ import annotations

from pathlib import Path

import msgpack
import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.protocol.sockets import DealerSocket
from asymcache.engine.client import CacheClient
from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
    registered_client,
)
from tests.cacheserver.test_daemon_remote import remote_flags
from tests.redis_cluster import unique_prefix

SLOTS = 4  # CPU slots of the daemons that test reservations (8 KiB each)


def _ask(sock: DealerSocket, frames: list[bytes]) -> tuple[int, p.Reply]:
    sock.send(frames)
    got = sock.recv(10.0)
    assert got is not None, "no reply"
    return p.decode_reply(got)


def _fields(sock: DealerSocket, msg: p.Message) -> dict:
    """The raw header fields of the daemon's reply to ``msg`` (as an older client reads them)."""
    sock.send(msg.to_wire(1))
    got = sock.recv(10.0)
    assert got is not None, "no reply"
    return msgpack.unpackb(got[0])[3]


def test_a_cancelled_reservation_frees_its_cpu_slot_for_other_blocks(start_daemon) -> None:
    d = start_daemon(cpu_bytes=f"{SLOTS * 8}KiB", disk_bytes=0)
    mine, theirs = make_refs(SLOTS), make_refs(2, start=10_000)
    with registered_client(d.endpoint, "eng") as c, registered_client(d.endpoint, "other") as o:
        assert sorted(c.reserve_cpu(mine)) == list(range(SLOTS))  # the whole tier is FILLING
        assert o.put(theirs, [payload(r) for r in theirs]).stored == [False, False]
        assert o.cancel([r.key for r in mine]) == 0  # another engine's reservations
        assert c.cancel([mine[0].key, mine[1].key, mine[1].key]) == 2
        assert c.cancel([mine[0].key]) == 0  # given back already
        assert o.put(theirs, [payload(r) for r in theirs]).stored == [True, True]
        assert c.reserve_cpu(mine[2:]) == [-2, -2]  # the other two reservations still stand


def test_cancel_leaves_a_confirmed_block_readable(start_daemon) -> None:
    d = start_daemon(disk_bytes=0)
    ref = make_refs(1)[0]
    with registered_client(d.endpoint) as c:
        slot = c.reserve_cpu([ref])[0]
        c.cpu_slot(slot)[:BLOCK_BYTES] = payload(ref)
        assert c.commit([ref], [slot], tier="cpu") == [True]
        assert c.cancel([ref.key]) == 0
        assert [bytes(b) for b in c.get([ref.key])] == [payload(ref)]


def test_a_malformed_cancel_gets_an_error_reply_and_the_daemon_keeps_serving(
        start_daemon) -> None:
    d = start_daemon(disk_bytes=0)
    sock = DealerSocket(zmq.Context.instance(), d.endpoint, b"raw")
    try:
        for rid, fields, code in ((5, {"keys": [b"short"]}, p.ErrorCode.BAD_FIELD),
                                  (6, {"keys": "nope"}, p.ErrorCode.BAD_FIELD),
                                  (7, {}, p.ErrorCode.BAD_FIELD),
                                  (8, {"keys": [], "slots": [1]}, p.ErrorCode.BAD_FIELD),
                                  (9, {"keys": [b"k" * 16]}, p.ErrorCode.NOT_REGISTERED)):
            frames = [msgpack.packb([p.PROTOCOL_VERSION, "cancel", rid, fields], use_bin_type=True)]
            got, reply = _ask(sock, frames)
            assert got == rid and isinstance(reply, p.ErrorReply) and reply.code == code
        got, pong = _ask(sock, p.Ping().to_wire(10))
        assert got == 10 and isinstance(pong, p.PingReply)
    finally:
        sock.close()
    with registered_client(d.endpoint) as c:
        assert c.cancel([]) == 0


def test_hello_and_ping_replies_name_the_tiers_only_to_a_request_that_asks(
        start_daemon) -> None:
    for flags, tiers in (({"disk_bytes": 0}, ["gpu", "cpu"]), ({}, ["gpu", "cpu", "disk"])):
        d = start_daemon(**flags)
        sock = DealerSocket(zmq.Context.instance(), d.endpoint, b"raw")
        try:
            assert "tiers" not in _fields(sock, p.Ping())  # a v1 client's PING: v1 reply
            told = _fields(sock, p.Ping(info=True))
            assert (told["tiers"], "remote_latency_s" in told) == (tiers, False)
        finally:
            sock.close()
        with CacheClient(d.endpoint, engine_id="eng", timeout_s=10, heartbeat=False) as c:
            c.hello("test-model", LAYOUT, gpu_slots=2)  # sends ``info``
            assert (c.info.tiers, c.info.remote_load) == (tuple(tiers), None)
        d.stop()


def test_hello_and_ping_replies_name_the_remote_tier_and_its_load_figures(
        start_daemon, redis_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    flags = remote_flags(redis_cluster, unique_prefix(), remote_load_latency_s=0.004,
                         remote_load_bandwidth_bps=2e9)
    d = start_daemon(data_dir=tmp_path / "a", **flags)
    with registered_client(d.endpoint) as c:
        assert (c.info.tiers, c.info.remote_load) == (("gpu", "cpu", "disk", "remote"),
                                                      (0.004, 2e9))
    sock = DealerSocket(zmq.Context.instance(), d.endpoint, b"raw")
    try:
        told = _fields(sock, p.Ping(info=True))
        assert (told["tiers"], told["remote_latency_s"], told["remote_bandwidth_bps"]) == (
            ["gpu", "cpu", "disk", "remote"], 0.004, 2e9)
        assert set(_fields(sock, p.Ping())) == {"ok", "epoch", "server_time", "version",
                                                "registered"}
    finally:
        sock.close()
