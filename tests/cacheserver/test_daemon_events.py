"""KV events of a real daemon process, read as docs/daemon.md ("KV events") describes them.

The decoder and the consumer's index here are written from that document, not from the
daemon's code (``cacheserver/events.py``) nor from ``ops/kv_events.py``: if the daemon drifts
from its documented schema, these tests fail.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time

import msgpack
import pytest
import zmq

from asymcache.cacheserver.blocks import namespace_id
from asymcache.cacheserver.protocol import Where
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
    registered_client,
)

STORED_KEYS = {"type", "block_hashes", "parent_block_hash", "token_ids", "block_size",
               "lora_id", "medium", "lora_name"}


# ---- the documented schema ---------------------------------------------------------------
def decode(seq_frame: bytes, payload_frame: bytes) -> tuple[int, dict]:
    """``(seq, batch)`` of one message; checks every documented key and type."""
    assert len(seq_frame) == 8
    batch = msgpack.unpackb(payload_frame, raw=False)
    assert set(batch) == {"ts", "events", "topic", "topic_prev_seq", "epoch"}
    assert isinstance(batch["epoch"], int)
    assert isinstance(batch["ts"], float) and abs(batch["ts"] - time.time()) < 600
    assert isinstance(batch["topic_prev_seq"], int)
    for event in batch["events"]:
        kind = event["type"]
        if kind == "AllBlocksCleared":
            assert set(event) == {"type"}
            continue
        assert event["medium"] in ("GPU", "CPU", "DISK", "REMOTE")
        extra = {"engine_id"} if event["medium"] == "GPU" else set()
        assert all(isinstance(h, bytes) and len(h) == 16 for h in event["block_hashes"])
        if kind == "BlockStored":
            assert set(event) == STORED_KEYS | extra
            assert event["token_ids"] == [] and event["block_size"] == LAYOUT.block_size
            assert event["lora_id"] is None and event["lora_name"] is None
            parent = event["parent_block_hash"]
            assert parent is None or (isinstance(parent, bytes) and len(parent) == 16)
        else:
            assert kind == "BlockRemoved"
            assert set(event) == {"type", "block_hashes", "medium"} | extra
    return int.from_bytes(seq_frame, "big"), batch


def replay(endpoint: str, start: int = 0, prefix: bytes | None = None,
           delimiter: bool = True) -> list[tuple[int, dict]]:
    """Every kept batch from ``start``, asked with (REQ framing) or without the empty
    delimiter frame."""
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(endpoint)
    envelope = [b""] if delimiter else []
    sock.send_multipart([*envelope, start.to_bytes(8, "big"),
                         *([prefix] if prefix is not None else [])])
    out = []
    try:
        while True:
            assert sock.poll(5000), "no replay answer"
            got = sock.recv_multipart()
            assert got[:len(envelope)] == envelope and len(got) == len(envelope) + 2
            seq, body = got[len(envelope):]
            if seq == (-1).to_bytes(8, "big", signed=True):
                assert body == b""
                return out
            out.append(decode(seq, body))
    finally:
        sock.close()


class Consumer:
    """A router's index from the documented events: (block, place) pairs, place being the
    medium or ``GPU:<engine_id>``."""

    def __init__(self) -> None:
        self.held: set[tuple[bytes, str]] = set()
        self.parent: dict[bytes, bytes | None] = {}
        self.seqs: list[int] = []

    def apply(self, seq: int, batch: dict) -> None:
        self.seqs.append(seq)
        for e in batch["events"]:
            if e["type"] == "AllBlocksCleared":
                self.held.clear()
                continue
            place = e["medium"] + (f":{e['engine_id']}" if e["medium"] == "GPU" else "")
            if e["type"] == "BlockStored":
                parent = e["parent_block_hash"]
                for h in e["block_hashes"]:
                    assert (h, place) not in self.held, "stored twice without a removal"
                    self.held.add((h, place))
                    self.parent[h] = parent
                    parent = h
            else:
                for h in e["block_hashes"]:
                    assert (h, place) in self.held, "removed without being stored"
                    self.held.remove((h, place))

    def places(self, key: bytes) -> set[str]:
        return {p for h, p in self.held if h == key}


def subscribe(endpoint: str, *topics: bytes) -> zmq.Socket:
    sub = zmq.Context.instance().socket(zmq.SUB)
    sub.linger = 0
    for t in topics or (b"",):
        sub.subscribe(t)
    sub.connect(endpoint)
    time.sleep(0.3)  # the subscription reaches the publisher (ZeroMQ's slow joiner)
    return sub


def receive(sub: zmq.Socket, quiet_s: float = 0.5) -> list[tuple[bytes, int, dict]]:
    """Everything published until nothing arrives for ``quiet_s``."""
    out = []
    while sub.poll(int(quiet_s * 1000)):
        topic, seq, body = sub.recv_multipart()
        out.append((topic, *decode(seq, body)))
    return out


@pytest.fixture
def events_daemon(start_daemon, tmp_path):
    def start(**flags):
        ev, rp = f"ipc://{tmp_path}/ev.ipc", f"ipc://{tmp_path}/rp.ipc"
        d = start_daemon(events_endpoint=ev, events_replay_endpoint=rp, **flags)
        return d, ev, rp
    return start


def topic(salt: str = "") -> bytes:
    return b"kv/" + namespace_id("test-model", LAYOUT, salt).hex().encode()


# ---- tests --------------------------------------------------------------------------------
def test_gpu_and_cpu_blocks_are_announced_as_chains_on_their_namespace_topic(events_daemon):
    d, ev, _ = events_daemon()
    sub = subscribe(ev)
    c = registered_client(d.endpoint, engine_id="e1", gpu_slots=4)
    refs = make_refs(3)
    keys = [r.key for r in refs]
    assert c.commit(refs, [0, 1, 2]) == [True] * 3
    got = receive(sub)
    assert [(t, b["events"]) for t, _, b in got] == [(topic(), [{
        "type": "BlockStored", "block_hashes": keys, "parent_block_hash": None, "token_ids": [],
        "block_size": 16, "lora_id": None, "medium": "GPU", "lora_name": None,
        "engine_id": "e1"}])]
    c.lookup(keys[:1])  # leases block 0: the other two are the victims
    victims = c.allocate(2)
    for v in victims:
        c.cpu_slot(v.demote_to)[:BLOCK_BYTES] = payload(refs[keys.index(v.key)])
    c.commit(refs[1:], [v.demote_to for v in sorted(victims, key=lambda v: keys.index(v.key))],
             tier="cpu")
    events = [e for _, _, b in receive(sub) for e in b["events"]]
    removed = [e for e in events if e["type"] == "BlockRemoved"]
    assert {(e["medium"], e["engine_id"]) for e in removed} == {("GPU", "e1")}
    assert sorted(h for e in removed for h in e["block_hashes"]) == sorted(keys[1:])
    stored = [e for e in events if e["type"] == "BlockStored"]
    assert [(e["medium"], e["block_hashes"], e["parent_block_hash"]) for e in stored] == [
        ("CPU", keys[1:], keys[0])]
    c.close()


def test_a_subscriber_of_one_namespace_sees_only_it_and_replay_filters_by_prefix(
        events_daemon):
    d, ev, rp = events_daemon()
    sub_a = subscribe(ev, topic("a"), b"kv/*")
    c = registered_client(d.endpoint, gpu_slots=2)
    a, b = make_refs(2, salt="a"), make_refs(2, salt="b")
    c.put(a, [payload(r) for r in a])
    c.put(b, [payload(r) for r in b])
    got = receive(sub_a)
    assert {t for t, _, _ in got} == {topic("a")}
    assert [h for _, _, batch in got for e in batch["events"] for h in e["block_hashes"]] == [
        r.key for r in a]
    everything = replay(rp, 0)
    assert [s for s, _ in everything] == list(range(len(everything)))  # none missing
    assert {b_["topic"] for _, b_ in everything} == {"kv/*", topic("a").decode(),
                                                     topic("b").decode()}
    only_b = replay(rp, 0, topic("b"), delimiter=False)
    assert {b_["topic"] for _, b_ in only_b} == {topic("b").decode()}
    # topic_prev_seq chains the batches of a topic across the global sequence
    prev = -1
    for seq, batch in only_b:
        assert batch["topic_prev_seq"] == prev
        prev = seq
    assert replay(rp, 10**6) == []
    c.close()


def test_consumer_index_equals_the_daemons_after_a_mixed_run(events_daemon):
    """GPU commits, victims demoted to CPU, PUTs that overflow the CPU tier into disk,
    promotions back, releases: the index built from the live stream, and the one built from
    the replay buffer, both equal what LOOKUP and STATS say at the end."""
    d, ev, rp = events_daemon()
    sub = subscribe(ev)
    c = registered_client(d.endpoint, engine_id="mix", gpu_slots=8)
    rng = random.Random(7)
    seqs = [make_refs(6, start=1000 * i) for i in range(12)]
    all_refs = [r for s in seqs for r in s]
    by_key = {r.key: r for r in all_refs}
    gpu: dict[int, bytes] = {}
    for _ in range(120):  # bounded: 120 operations
        op = rng.choice(["commit", "evict", "put", "promote", "release"])
        s = rng.choice(seqs)
        if op == "commit":
            free = [slot for slot in range(8) if slot not in gpu]
            refs = [r for r in s if r.key not in gpu.values()][:len(free)]
            if refs:
                c.commit(refs, free[:len(refs)])
                gpu.update(zip(free, (r.key for r in refs), strict=False))
        elif op == "evict":
            c.release(everything=True)
            for v in c.allocate(rng.randint(1, 4)):
                gpu.pop(v.gpu_slot, None)
                if v.demote_to >= 0:
                    c.cpu_slot(v.demote_to)[:BLOCK_BYTES] = payload(by_key[v.key])
                    c.commit([by_key[v.key]], [v.demote_to], tier="cpu")
        elif op == "put":
            c.put(s, [payload(r) for r in s])
        elif op == "promote":
            c.promote([r.key for r in s], lease=False)
        else:
            c.release(everything=True)
    c.flush()
    live, from_replay = Consumer(), Consumer()
    for _, seq, batch in receive(sub):
        live.apply(seq, batch)
    for seq, batch in replay(rp, 0):
        from_replay.apply(seq, batch)
    assert live.held == from_replay.held and live.seqs == from_replay.seqs[1:]  # seq 0: start
    assert from_replay.seqs == list(range(len(from_replay.seqs)))
    keys = list(by_key)
    found = c.lookup(keys, lease=False).where
    order = ["GPU:mix", "CPU", "DISK"]
    codes = {"GPU:mix": Where.GPU, "CPU": Where.CPU, "DISK": Where.DISK}
    for key, where in zip(keys, found, strict=True):
        places = live.places(key)
        top = next((p for p in order if p in places), None)
        assert where == (codes[top] if top else Where.MISS), (key.hex(), places, where)
    tiers = c.stats()["tiers"]
    for tier, place in (("gpu", "GPU:mix"), ("cpu", "CPU"), ("disk", "DISK")):
        assert tiers[tier]["blocks"] == sum(1 for _, p in live.held if p == place), tier
    assert tiers["cpu"]["evictions"] > 0 and tiers["disk"]["blocks"] > 0  # the run moved blocks
    c.close()


def test_a_restarted_daemon_clears_then_announces_what_its_disk_holds(events_daemon):
    d, _, rp = events_daemon()
    c = registered_client(d.endpoint)
    refs = make_refs(3)
    assert c.put(refs, [payload(r) for r in refs], durable=True).durable
    c.close()
    d.stop()
    d2, _, _ = events_daemon()
    assert d2.data_dir == d.data_dir
    batches = replay(rp, 0)
    (seq0, first), (seq1, second) = batches[:2]
    assert (seq0, first["topic"], first["events"]) == (0, "kv/*", [{"type": "AllBlocksCleared"}])
    assert (seq1, second["topic"]) == (1, topic().decode())
    assert {e["type"] for e in second["events"]} == {"BlockStored"}  # disk order, not chains
    consumer = Consumer()
    for seq, batch in batches:
        consumer.apply(seq, batch)
    assert consumer.held == {(r.key, "DISK") for r in refs}
    assert consumer.parent == {r.key: r.parent for r in refs}


def test_a_malformed_replay_request_gets_the_end_marker_and_the_daemon_serves_on(events_daemon):
    _, _, rp = events_daemon()
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(rp)
    sock.send_multipart([b"", b"short"])
    assert sock.poll(5000)
    assert sock.recv_multipart() == [b"", (-1).to_bytes(8, "big", signed=True), b""]
    sock.close()
    assert [b["events"] for _, b in replay(rp, 0)] == [[{"type": "AllBlocksCleared"}]]


def test_asymcache_events_prints_the_stream(events_daemon):
    d, ev, rp = events_daemon()
    c = registered_client(d.endpoint, engine_id="e1")
    refs = make_refs(2)
    c.commit(refs, [0, 1])
    cmd = [sys.executable, "-m", "asymcache.ops.cli", "events", "--endpoint", ev,
           "--replay-endpoint", rp, "--seconds", "1"]
    out = subprocess.run([*cmd, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["seq"] for r in rows] == [0, 1]
    assert rows[1]["events"][0]["block_hashes"] == [r.key.hex() for r in refs]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    assert "AllBlocksCleared" in text and "2 blocks stored in GPU of e1" in text
    c.close()


def test_events_settings_are_checked_at_start(tmp_path):
    from asymcache.cacheserver.config import ServerConfig

    with pytest.raises(ValueError, match="events_replay_endpoint: needs events_endpoint"):
        ServerConfig(events_replay_endpoint="ipc:///tmp/x")
    with pytest.raises(ValueError, match=r"events_endpoint: .* is already endpoint"):
        ServerConfig(endpoint="ipc:///tmp/a", events_endpoint="ipc:///tmp/a")
    with pytest.raises(ValueError, match="events_endpoint: must be ipc://PATH or tcp://"):
        ServerConfig(events_endpoint="udp://x")


def test_a_long_replay_to_a_slow_reader_loses_nothing(events_daemon):
    """More batches than a subscriber's socket queues (ZeroMQ's 1000 messages): the daemon
    waits for the reader instead of dropping batches or the end marker."""
    d, _, rp = events_daemon()
    c = registered_client(d.endpoint, gpu_slots=1500)
    refs = [make_refs(1, salt=f"tenant{i}")[0] for i in range(1500)]
    c.commit(refs, list(range(1500)))  # 1500 namespaces: one batch per topic
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(rp)
    sock.send_multipart([b"", (0).to_bytes(8, "big")])
    time.sleep(1.0)  # the reader lags: the daemon's queue to it fills
    seqs = []
    while True:
        assert sock.poll(5000), f"replay stalled after {len(seqs)} batches"
        _, seq, body = sock.recv_multipart()
        if seq == (-1).to_bytes(8, "big", signed=True):
            break
        seqs.append(decode(seq, body)[0])
    sock.close()
    assert len(seqs) > 1500 and seqs == list(range(len(seqs)))
    c.close()
