"""Tenancy, sharing between processes, lease expiry, capacity, CURVE and /metrics."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
import zmq
import zmq.auth

from asymcache.cacheserver.protocol import (
    HEARTBEAT_SUFFIX,
    PROTOCOL_VERSION,
    Ping,
    Where,
    decode_reply,
)
from asymcache.cacheserver.protocol.sockets import ClientCurve, DealerSocket, ping
from asymcache.engine.client import CacheClient, DaemonUnavailable
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    free_port,
    make_refs,
    payload,
    registered_client,
)


def test_two_cache_salts_never_see_each_others_blocks(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB")  # 2 CPU slots: blocks spill to disk too
    a, b = make_refs(5, salt="tenant-a"), make_refs(5, salt="tenant-b")  # same tokens
    assert not {r.key for r in a} & {r.key for r in b}
    with registered_client(d.endpoint, "eng") as c:
        c.put(a, [payload(r) for r in a], durable=True)
        c.commit(a[:2], [0, 1])
        where_a = c.lookup([r.key for r in a], lease=False).where
        assert {Where.GPU, Where.CPU, Where.DISK} <= set(where_a)
        assert c.lookup([r.key for r in b], lease=False).where == [Where.MISS] * 5
        assert c.get([r.key for r in b]) == [None] * 5
        assert c.promote([r.key for r in b]) == [-1] * 5


_WRITER = textwrap.dedent("""
    import sys
    from asymcache.engine.client import CacheClient, DaemonUnavailable
    from tests.cacheserver.daemon_fixtures import LAYOUT, BLOCK_BYTES, make_refs, payload
    ref = make_refs(1, salt="shared")[0]
    c = CacheClient(sys.argv[1], engine_id="writer", heartbeat=False)
    c.hello("test-model", LAYOUT, gpu_slots=2)
    slot = c.reserve_cpu([ref])[0]
    c.cpu_slot(slot)[:BLOCK_BYTES] = payload(ref)
    assert c.commit([ref], [slot], tier="cpu") == [True]
    c.close()
    print(slot)
""")


def test_two_client_processes_share_a_block_through_the_cpu_tier(start_daemon) -> None:
    d = start_daemon()
    out = subprocess.run([sys.executable, "-c", _WRITER, d.endpoint], capture_output=True,
                         text=True, timeout=60, check=True)
    slot = int(out.stdout.strip())
    ref = make_refs(1, salt="shared")[0]
    # the writer has exited: the segment must live on
    with registered_client(d.endpoint, "reader") as c:
        found = c.lookup([ref.key])
        assert (found.where, found.slots) == ([Where.CPU], [slot])
        assert bytes(c.cpu_slot(slot)[:BLOCK_BYTES]) == payload(ref)
        assert c.release([ref.key]) == 1


_LEASER = textwrap.dedent("""
    import sys, time
    from asymcache.engine.client import CacheClient, DaemonUnavailable
    from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs
    refs = make_refs(2)
    c = CacheClient(sys.argv[1], engine_id="doomed", heartbeat=False)
    c.hello("test-model", LAYOUT, gpu_slots=2)
    c.lookup([r.key for r in refs])
    print("leased", flush=True)
    time.sleep(60)
""")


def test_leases_of_a_killed_client_expire(start_daemon) -> None:
    d = start_daemon(cpu_bytes="16KiB", disk_bytes=0, lease_timeout_s=1.0)
    refs = make_refs(2)
    with registered_client(d.endpoint, "owner") as c:
        c.put(refs, [payload(r) for r in refs])
        child = subprocess.Popen([sys.executable, "-c", _LEASER, d.endpoint],
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout.readline().strip() == "leased"
            assert c.stats()["leases"] == 2
            other = make_refs(1, salt="new")
            assert c.put(other, [payload(other[0])]).stored == [False]  # both slots leased
            child.kill()
        finally:
            child.wait(10)
        deadline = time.monotonic() + 10
        while c.stats()["leases"] and time.monotonic() < deadline:
            time.sleep(0.2)
            c.ping()  # this engine stays alive
        stats = c.stats()
        assert (stats["leases"], stats["engines"]) == (0, 1)
        assert c.put(other, [payload(other[0])]).stored == [True]


def _registered(sock: DealerSocket, engine_id: str) -> bool:
    sock.send(Ping(engine_id=engine_id).to_wire(1))
    frames = sock.recv(10.0)
    assert frames is not None, "the daemon did not answer a PING"
    return decode_reply(frames)[1].registered


def test_only_the_registering_socket_or_its_heartbeat_socket_keeps_an_engine_alive(
        start_daemon) -> None:
    d = start_daemon(lease_timeout_s=1)
    ctx = zmq.Context.instance()
    stranger = DealerSocket(ctx, d.endpoint)  # any other socket, naming engine "a"
    with registered_client(d.endpoint, "a"), registered_client(d.endpoint, "b") as b, \
            CacheClient(d.endpoint, engine_id="c", timeout_s=10) as c:  # a heartbeat thread
        beat_b = DealerSocket(ctx, d.endpoint, b.routing_id + HEARTBEAT_SUFFIX)  # b's heartbeat
        c.hello("test-model", LAYOUT, gpu_slots=4)
        try:
            for _ in range(25):  # 2.5 s: over twice lease_timeout_s; neither a nor b speaks
                assert _registered(beat_b, "b")
                _registered(stranger, "a")
                time.sleep(0.1)
            assert [_registered(stranger, e) for e in ("a", "b", "c")] == [False, True, True]
            assert b.stats()["engines"] == 2
        finally:
            stranger.close()
            beat_b.close()


def test_eviction_keeps_every_tier_within_capacity(start_daemon) -> None:
    # blocks of one CPU slot each: the stated capacities are exactly what the tiers hold
    d = start_daemon(cpu_bytes="16KiB", cpu_slot_bytes="4KiB", disk_bytes="96KiB")
    refs = make_refs(60)
    with registered_client(d.endpoint, "eng") as c:
        for i in range(0, 60, 10):
            c.put(refs[i:i + 10], [payload(r) for r in refs[i:i + 10]])
            c.commit(refs[i:i + 4], [0, 1, 2, 3])
            tiers = c.stats()["tiers"]
            for name in ("gpu", "cpu", "disk"):
                assert tiers[name]["blocks"] <= tiers[name]["capacity_blocks"], name
        c.flush()
        tiers = c.stats()["tiers"]
        # 96 KiB of LMDB entries of 4 KiB + header (2 pages + index overhead = 8448 B each)
        assert tiers["disk"]["capacity_blocks"] == 96 * 1024 // 8448 == 11
        assert tiers["disk"]["blocks"] == tiers["disk"]["capacity_blocks"]  # full = 100%
        assert tiers["cpu"]["blocks"] == tiers["cpu"]["capacity_blocks"] == 4
        assert tiers["cpu"]["evictions"] > 0
        assert tiers["cpu"]["demotions"] > 0 and tiers["disk"]["evictions"] > 0


def test_disk_capacity_is_counted_in_blocks_of_one_cpu_slot(start_daemon) -> None:
    # the default sizes: 16 GiB of disk holds 8,175 blocks of 2 MiB (513 LMDB pages + index
    # overhead each), not 16 GiB over the entry of an empty block (~38 million)
    d = start_daemon(cpu_bytes="4MiB", cpu_slot_bytes="2MiB", disk_bytes="16GiB",
                     disk_map_bytes="0", cpu_populate=False)
    with registered_client(d.endpoint, "eng") as c:
        tiers = c.stats()["tiers"]
    assert tiers["disk"]["capacity_blocks"] == (16 << 30) // (513 * 4096 + 256) == 8175
    assert tiers["cpu"]["capacity_blocks"] == 2


@pytest.fixture
def certs(tmp_path):
    keys, allowed = tmp_path / "keys", tmp_path / "allowed"
    keys.mkdir()
    allowed.mkdir()
    server_pub, server_sec = zmq.auth.create_certificates(str(keys), "server")
    good_pub, good_sec = zmq.auth.create_certificates(str(keys), "good")
    _, bad_sec = zmq.auth.create_certificates(str(keys), "bad")
    shutil.copy(good_pub, allowed / "good.key")
    return {"server_pub": server_pub, "server_sec": server_sec, "good": good_sec,
            "bad": bad_sec, "allowed": str(allowed)}


def test_curve_refuses_clients_without_allowed_keys(start_daemon, certs) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    good = ClientCurve.from_files(certs["server_pub"], certs["good"])
    start_daemon(endpoint=endpoint, curve=good, curve_secret_key_file=certs["server_sec"],
                 curve_clients_dir=certs["allowed"], disk_bytes=0)
    with CacheClient(endpoint, timeout_s=5, curve=good, heartbeat=False) as c:
        assert c.ping().version == PROTOCOL_VERSION
    assert ping(endpoint, timeout_s=1.0) is None  # no keys at all: no handshake, no reply
    bad = ClientCurve.from_files(certs["server_pub"], certs["bad"])
    with (CacheClient(endpoint, timeout_s=1.0, curve=bad, heartbeat=False) as c,
          pytest.raises(DaemonUnavailable, match="no reply")):
        c.ping()


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {k: float(v) for k, v in (ln.rsplit(" ", 1) for ln in text.splitlines()
                                     if ln and not ln.startswith("#"))}


def test_metrics_show_the_counters_this_test_caused(start_daemon) -> None:
    port = free_port()
    d = start_daemon(metrics_port=port)
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).status == 200
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5).status == 200
    refs = make_refs(3)
    with registered_client(d.endpoint, "eng") as c:
        c.commit(refs[:1], [0])
        c.put(refs[1:2], [payload(refs[1])])
        c.lookup([r.key for r in refs], lease=False)  # gpu hit, cpu hit, miss
        with pytest.raises(Exception, match="bad_field"):
            c.commit(refs[:1], [9])  # slot out of range
    m = _metrics(port)
    assert m['asymcache_tier_hits_total{tier="gpu"}'] == 1
    assert m['asymcache_tier_hits_total{tier="cpu"}'] == 1
    assert m['asymcache_tier_misses_total{tier="disk"}'] == 1
    assert m['asymcache_tier_moved_bytes_total{direction="net_to_cpu"}'] == BLOCK_BYTES
    assert m['asymcache_rpc_errors_total{code="bad_field"}'] == 1
    assert m['asymcache_rpc_latency_seconds_count{op="lookup"}'] == 1
    assert m['asymcache_tier_occupancy_blocks{tier="cpu"}'] == 1
    assert m['asymcache_server_connected_engines'] == 1
    assert m['asymcache_server_ready'] == 1
