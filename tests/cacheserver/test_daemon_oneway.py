"""One-way COMMIT, RELEASE and CANCEL (``notify``) against a real daemon: handled in order with
the engine's other requests, acknowledged in batches, errors reported in the ACK that covers
them, and a notification lost with a restarted daemon recovered by registering again."""

from __future__ import annotations

import time

import msgpack
import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.protocol.sockets import DealerSocket, ping
from tests.cacheserver.daemon_fixtures import LAYOUT, make_refs, registered_client

GPU, CPU, MISS = p.Where.GPU, p.Where.CPU, p.Where.MISS


def _replies(sock: DealerSocket, quiet_s: float = 0.5) -> list[tuple[int, p.Reply]]:
    out = []
    while (frames := sock.recv(quiet_s)) is not None:
        out.append(p.decode_reply(frames))
    return out


def test_notifications_run_in_order_and_one_ack_covers_them(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint, gpu_slots=4)
    refs = make_refs(3)
    keys = [r.key for r in refs]
    assert c.commit(refs, [0, 1, 2], notify=True) is None
    # the LOOKUP after it on the same socket sees it
    assert c.lookup(keys, lease=False).where == [GPU] * 3
    deadline = time.monotonic() + 5  # its ACK follows the batch it came in
    while c.poll_acks() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.poll_acks() == 0 and c.notify_errors == 0
    c.lookup(keys)  # leased
    assert c.release(keys, notify=True) is None
    assert [v.key for v in sorted(c.allocate(3), key=lambda v: v.gpu_slot)] == keys
    c.close()


def test_raw_notifications_get_one_ack_per_batch_with_the_refused_ones(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint, engine_id="raw", gpu_slots=4)
    sock = DealerSocket(zmq.Context.instance(), d.endpoint, c.routing_id + b"-2")
    refs = make_refs(2)
    # a second socket of no registered engine: every notification is refused, none answered
    sock.send(p.Commit(tier="gpu", blocks=refs, slots=[0, 1], notify=True).to_wire(7))
    sock.send(p.Release(keys=[refs[0].key], notify=True).to_wire(8))
    got = _replies(sock)
    assert [(rid, type(r).__name__) for rid, r in got][-1] == (8, "Ack")
    acks = [r for _, r in got if isinstance(r, p.Ack)]
    assert sum(a.count for a in acks) == 2 and max(a.upto for a in acks) == 8
    assert [i for a in acks for i in a.error_ids] == [7, 8]
    assert {code for a in acks for code in a.error_codes} == {p.ErrorCode.NOT_REGISTERED}
    # a notification the daemon cannot decode is answered like any request, under its id
    bad = [msgpack.packb([p.PROTOCOL_VERSION, "commit", 9, {"tier": "gpu", "notify": True}],
                         use_bin_type=True)]
    sock.send(bad)
    (rid, reply), = _replies(sock)
    assert rid == 9 and isinstance(reply, p.ErrorReply) and reply.code == p.ErrorCode.BAD_FIELD
    sock.close()
    c.close()


def test_the_client_counts_refusals_and_asks_to_register_again(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint, gpu_slots=2)
    ref = make_refs(1)[0]
    c.commit([ref, ref], [0], notify=True)  # two blocks, one slot: BAD_FIELD in the ACK
    deadline = time.monotonic() + 5
    while c.poll_acks() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.notify_errors == 1 and not c.needs_hello
    d.stop()
    d2 = start_daemon(endpoint=d.endpoint)  # a restarted daemon: this engine is unknown to it
    time.sleep(0.3)
    c.commit([ref], [0], notify=True)  # reaches the new daemon: refused, NOT_REGISTERED
    deadline = time.monotonic() + 5
    while not c.needs_hello and time.monotonic() < deadline:
        c.poll_acks()
        time.sleep(0.02)
    assert c.needs_hello and c.notify_errors == 2
    c.hello("test-model", LAYOUT, gpu_slots=2, held=lambda: ([ref], [0]))
    assert not c.needs_hello
    assert c.lookup([ref.key], lease=False).where == [GPU]  # exact again, from HELLO's held
    assert d2.endpoint == d.endpoint
    c.close()


def test_an_engine_registers_again_after_a_lost_notification(daemons) -> None:
    """The engine's link: a COMMIT sent while the daemon restarts is refused in its ACK; the
    next tick registers again with the blocks the engine holds, so LOOKUP finds them."""
    from asymcache.cacheserver.blocks import namespace_id
    from asymcache.cacheserver.protocol import BlockRef
    from asymcache.engine.cache_link import CacheLink

    d = daemons.start()
    layout = LAYOUT
    link = CacheLink(d.endpoint, "link", "test-model", layout, gpu_slots=4, timeout_s=5)
    held: list = []
    link.tick(lambda: held)
    assert link.connected
    ns = namespace_id("test-model", layout, "")
    ref = BlockRef(b"\x01" * 16, ns, None, 0)
    d.stop()
    d = daemons.start()
    time.sleep(0.3)
    held.append((ref, 3))
    link.commit("gpu", [ref], [3])  # the new daemon does not know this engine
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not link.client.needs_hello:
        link.client.poll_acks()
        time.sleep(0.02)
    link.tick(lambda: held)  # registers again, announcing what it holds
    assert link.connected and link.reconnects == 1
    assert ping(d.endpoint).epoch == link.client.registration.epoch
    assert link.lookup([ref.key])[0].where == "gpu"
    link.close()


def test_a_client_of_protocol_1_gets_a_clear_error(start_daemon) -> None:
    d = start_daemon()
    sock = DealerSocket(zmq.Context.instance(), d.endpoint, b"old")
    sock.send([msgpack.packb([1, "ping", 4, {}], use_bin_type=True)])
    frames = sock.recv(5)
    assert frames is not None
    head = msgpack.unpackb(frames[0])
    assert head[0] == p.PROTOCOL_VERSION and head[2] == 4 and head[3]["ok"] is False
    assert head[3]["code"] == "bad_version"
    assert f"protocol version 1 is not {p.PROTOCOL_VERSION}" in head[3]["message"]
    sock.close()


def test_a_gpu_commit_can_reserve_cpu_slots_told_in_its_ack(start_daemon) -> None:
    from tests.cacheserver.daemon_fixtures import BLOCK_BYTES, payload

    d = start_daemon()
    c = registered_client(d.endpoint, gpu_slots=4)
    refs = make_refs(3)
    keys = [r.key for r in refs]
    c.put(refs[2:], [payload(refs[2])])  # in the CPU tier already: nothing to reserve
    assert c.commit(refs, [0, 1, 2], notify=True, reserve=True) is None
    deadline = time.monotonic() + 5
    while len(c.reservations) < 2 and time.monotonic() < deadline:
        c.poll_acks()
        time.sleep(0.01)
    got = {key: (slot, gen) for key, slot, gen in c.reservations}
    assert set(got) == set(keys[:2]) and {g for _, g in got.values()} == {c.generation}
    assert c.lookup(keys, lease=False).where == [GPU] * 3  # reserved slots are not readable
    for ref in refs[:2]:
        c.cpu_slot(got[ref.key][0])[:BLOCK_BYTES] = payload(ref)
    c.commit(refs[:2], [got[k][0] for k in keys[:2]], tier="cpu", notify=True)
    assert [bytes(b) for b in c.get(keys)] == [payload(r) for r in refs]
    assert c.commit(refs[:1], [3], reserve=True) == [True]  # sync: slots in the reply
    c.close()


def test_victims_named_ahead_stay_indexed_until_their_slot_is_reused(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint, gpu_slots=4)
    refs, new = make_refs(4), make_refs(1, salt="new")[0]
    keys = [r.key for r in refs]
    c.commit(refs, [0, 1, 2, 3])
    c.allocate(2, notify=True)
    deadline = time.monotonic() + 5
    while len(c.stocked) < 2 and time.monotonic() < deadline:
        c.poll_acks()
        time.sleep(0.01)
    named = c.take_victims()
    assert len(named) == 2 and all(d >= 0 for _, _, d, _ in named)
    slot, key, _, _ = named[0]
    # still this engine's: LOOKUP finds them, and they are never named twice
    assert c.lookup(keys, lease=False).where == [GPU] * 4
    assert {v.key for v in c.allocate(4)}.isdisjoint({k for _, k, _, _ in named})
    c.commit([new], [slot])  # the engine gave the victim up: another block in its slot
    found = c.lookup([key, new.key], lease=False)
    assert found.where[1] == GPU and found.where[0] != GPU
    c.close()


def test_a_reply_never_overtakes_the_ack_of_a_one_way_request_before_it(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint, engine_id="order", gpu_slots=4)
    sock = DealerSocket(zmq.Context.instance(), d.endpoint, c.routing_id)  # its session's id
    c.close()
    sock.send(p.Hello(engine_id="order", model_fingerprint="test-model",
                      layout=LAYOUT.to_dict(), gpu_slots=4).to_wire(1))
    assert isinstance(_replies(sock)[-1][1], p.HelloReply)
    ref = make_refs(1)[0]
    for _ in range(20):  # sent back to back: mostly handled in one batch
        sock.send(p.Commit(tier="gpu", blocks=[ref], slots=[0], notify=True).to_wire(2))
        sock.send(p.Ping(engine_id="order").to_wire(3))
        kinds = [type(r).__name__ for _, r in _replies(sock, 0.2)]
        assert kinds == ["Ack", "PingReply"], kinds
    sock.close()


def test_forget_drops_given_up_slots_and_a_one_way_cpu_allocate_is_refused(start_daemon) -> None:
    d = start_daemon()
    c = registered_client(d.endpoint, gpu_slots=4)
    refs = make_refs(2)
    c.commit(refs, [0, 1])
    c.notify(p.Forget(slots=[0, 1], keys=[refs[0].key, refs[0].key], notify=True))
    c.notify(p.Allocate(tier="cpu", blocks=refs, notify=True))
    assert c.lookup([r.key for r in refs], lease=False).where == [MISS, GPU]  # slot 1 kept
    deadline = time.monotonic() + 5
    while c.poll_acks() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert c.notify_errors == 1 and c.reservations == []
    c.close()
