"""Pipelined requests and streams of batches through the CPU tier, against a real daemon: the
bytes read back equal those written, each batch costs one request, slots and leases are given
back when a copy fails, and a daemon restarted mid-stream loses no correctness."""

from __future__ import annotations

import time

import numpy as np
import pytest

from asymcache.cacheserver import protocol as p
from asymcache.engine.client import CacheClient, DaemonError, DaemonUnavailable
from asymcache.engine.cpu_stream import MAX_BATCH, CpuTierStream
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
    registered_client,
)

CPU, MISS = p.Where.CPU, p.Where.MISS


def _batches(n_batches: int, per: int, model: str = "stream") -> list[list[p.BlockRef]]:
    return [make_refs(per, model=model, start=1000 * b) for b in range(n_batches)]


class _Counted:
    """Counts the messages a client sends by op and kind (request / one-way)."""

    def __init__(self, client) -> None:
        self.sent: list[tuple[str, bool]] = []
        for name, one_way in (("submit", False), ("notify", True), ("_request", False)):
            real = getattr(client, name)

            def wrapped(msg, real=real, one_way=one_way):
                self.sent.append((msg.OP, one_way))
                return real(msg)
            setattr(client, name, wrapped)


def _quick_client(endpoint: str, timeout_s: float) -> CacheClient:
    c = CacheClient(endpoint, engine_id="eng", timeout_s=timeout_s, heartbeat=False)
    c.hello("test-model", LAYOUT, gpu_slots=4)
    return c


def _slab(client) -> np.ndarray:
    reg = client.registration
    return np.frombuffer(client.cpu_tier_view(), np.uint8).reshape(reg.cpu_num_slots, -1)


def test_a_written_stream_reads_back_byte_for_byte_with_one_request_per_batch(
        start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    batches = _batches(6, 3)
    slab = _slab(c)
    counted = _Counted(c)

    def fill(i: int, slots: list[int]) -> None:
        for ref, s in zip(batches[i], slots, strict=True):
            slab[s, :BLOCK_BYTES] = np.frombuffer(payload(ref), np.uint8)

    wrote = CpuTierStream(c, depth=2).write(batches, fill)
    assert (wrote.batches, wrote.blocks, wrote.moved, wrote.skipped, wrote.refused) == (6, 18, 18,
                                                                                      0, 0)
    # two ALLOCATEs start it, each later batch's reservation rides on a COMMIT, and the last
    # two batches' COMMITs (nothing left to reserve) are one-way
    assert counted.sent == [("allocate", False)] * 2 + [("commit", False)] * 4 + \
        [("commit", True)] * 2
    assert c.lookup([r.key for b in batches for r in b], lease=False).where == [CPU] * 18

    got: dict[bytes, bytes] = {}
    keys = [[r.key for r in b] for b in batches]

    def drain(i: int, slots: list[int | None]) -> None:
        for key, s in zip(keys[i], slots, strict=True):
            got[key] = slab[s, :BLOCK_BYTES].tobytes()

    counted.sent.clear()
    read = CpuTierStream(c, depth=3).read(keys, drain)
    assert (read.moved, read.skipped) == (18, 0)
    assert counted.sent == [("lookup", False)] * 6 + [("release", True)] * 3
    assert got == {r.key: payload(r) for b in batches for r in b}
    assert c.stats()["leases"] == 0  # every lease given back (one RELEASE rides on a LOOKUP)
    slab = None  # the view goes before the client unmaps the tier
    c.close()


def test_blocks_already_in_the_tier_or_unknown_are_skipped(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    first, second = _batches(2, 2)
    stream = CpuTierStream(c)
    assert stream.write([first], lambda i, slots: None).moved == 2
    wrote = stream.write([first, second], lambda i, slots: None)
    assert (wrote.moved, wrote.skipped) == (2, 2)  # the first batch is there already (-2)
    seen: list[list[int | None]] = []
    read = stream.read([[first[0].key, make_refs(1, model="never")[0].key]],
                       lambda i, slots: seen.append(slots))
    assert (read.moved, read.skipped) == (1, 1) and seen[0][1] is None
    c.close()


def test_a_failing_copy_gives_back_its_slots_and_those_reserved_ahead(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    batches = _batches(5, 2)

    def fill(i: int, slots: list[int]) -> None:
        if i == 1:
            raise OSError("copy failed")

    with pytest.raises(OSError, match="copy failed"):
        CpuTierStream(c, depth=3).write(batches, fill)
    c.settle(5)
    assert c.notify_errors == 0
    # batch 0 was committed; 1 (failed) and 2-3 (reserved ahead) were cancelled, 4 never asked
    where = c.lookup([r.key for b in batches for r in b], lease=False).where
    assert where == [CPU] * 2 + [MISS] * 8
    assert c.reserve_cpu([r for b in batches[1:] for r in b]).count(-1) == 0  # room again
    c.close()


def test_a_failing_read_gives_back_every_lease(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    batches = _batches(4, 2)
    CpuTierStream(c).write(batches, lambda i, slots: None)

    def drain(i: int, slots: list[int | None]) -> None:
        if i == 1:
            raise ValueError("reader gave up")

    with pytest.raises(ValueError, match="reader gave up"):
        CpuTierStream(c, depth=2).read([[r.key for r in b] for b in batches], drain)
    c.settle(5)
    assert c.stats()["leases"] == 0
    c.close()


def test_submitted_requests_are_answered_in_any_order_of_collection(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    refs = make_refs(3)
    c.commit(refs, [0, 1, 2])
    first = c.submit(p.Lookup(keys=[refs[0].key], lease=False))
    second = c.submit(p.Lookup(keys=[refs[1].key, refs[2].key], lease=False))
    assert c.ping().epoch  # a blocking request between them keeps their replies aside
    assert c.result(second, lambda r: r.where) == [p.Where.GPU] * 2
    assert c.result(first, lambda r: r.where) == [p.Where.GPU]
    with pytest.raises(DaemonUnavailable, match="never submitted"):
        c.result(first)
    c.close()


def test_requests_submitted_to_a_daemon_that_went_away_are_reported_lost(start_daemon) -> None:
    d = start_daemon()
    c = _quick_client(d.endpoint, 0.5)
    d.stop()
    rid = c.submit(p.Lookup(keys=[make_refs(1)[0].key]))
    other = c.submit(p.Lookup(keys=[make_refs(1)[0].key]))
    with pytest.raises(DaemonUnavailable):
        c.result(rid)
    d.start()
    time.sleep(0.1)  # the reconnect backoff after the miss (50 ms)
    assert c.ping().registered  # a fresh socket, and a new HELLO to the restarted daemon
    with pytest.raises(DaemonUnavailable, match="lost"):
        c.result(other)
    c.close()


def test_a_daemon_restarted_mid_stream_holds_only_bytes_written_for_it(start_daemon) -> None:
    d = start_daemon()
    c = _quick_client(d.endpoint, 1.0)
    batches = _batches(6, 2)
    refs = [r for b in batches for r in b]

    def fill(i: int, slots: list[int]) -> None:
        if i == 2:
            d.stop()
            d.start()
        for ref, s in zip(batches[i], slots, strict=True):
            if s >= 0:
                c.cpu_slot(s)[:BLOCK_BYTES] = payload(ref)

    try:
        CpuTierStream(c).write(batches, fill)
    except DaemonUnavailable:
        time.sleep(0.1)  # the reconnect backoff
    found = c.lookup([r.key for r in refs])  # registers again if the stream did not
    held = [(r, s) for r, w, s in zip(refs, found.where, found.slots, strict=True) if w == CPU]
    assert all(bytes(c.cpu_slot(s)[:BLOCK_BYTES]) == payload(r) for r, s in held)
    # and the stream works on the restarted daemon
    again = CpuTierStream(c).write(_batches(2, 2, model="after"), lambda i, slots: None)
    assert again.moved == 4 and again.refused == 0
    c.close()


def test_stream_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="depth"):
        CpuTierStream(None, depth=0)  # type: ignore[arg-type]


def test_an_oversized_batch_is_refused_before_anything_is_sent(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    too_big = [make_refs(1, start=i)[0] for i in range(MAX_BATCH + 1)]
    with pytest.raises(ValueError, match=f"more than {MAX_BATCH}"):
        CpuTierStream(c).write([too_big], lambda i, slots: None)
    assert c.stats()["index_blocks"] == 0
    c.close()


def test_commit_reserve_next_and_lookup_release_on_the_wire(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint)
    a, b = make_refs(2, model="a"), make_refs(2, model="b")
    slots = c.reserve_cpu(a)
    reply = c.result(c.submit(p.Commit(tier="cpu", blocks=a, slots=slots, reserve_next=b)))
    assert reply.accepted == [True, True] and min(reply.reserved) >= 0
    assert set(reply.reserved).isdisjoint(slots)
    c.commit(b, reply.reserved, tier="cpu")
    keys = [r.key for r in a + b]
    assert c.lookup(keys[:2]).where == [CPU] * 2  # leased
    got = c.result(c.submit(p.Lookup(keys=keys[2:], release=keys[:2])))
    assert got.where == [CPU] * 2
    assert c.release(keys) == 2  # only b's leases were left
    with pytest.raises(DaemonError, match="reserve_next"):
        c.result(c.submit(p.Commit(tier="gpu", blocks=a, slots=[0, 1], reserve_next=b)))
    c.notify(p.Commit(tier="cpu", blocks=[], slots=[], reserve_next=b, notify=True))
    assert c.settle(5) == 0 and c.notify_errors == 1  # refused in its ACK
    c.close()
