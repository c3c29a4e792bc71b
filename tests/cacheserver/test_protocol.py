"""Wire protocol: every message survives encode/decode; bad input raises one ProtocolError."""

from __future__ import annotations

import msgpack
import pytest

from asymcache.cacheserver import protocol as p
from tests.cacheserver.daemon_fixtures import make_refs

V = p.PROTOCOL_VERSION

REFS = make_refs(3)
KEYS = [r.key for r in REFS]

REQUESTS = [
    p.Hello(engine_id="e", model_fingerprint="m", layout={"num_layers": 1}, gpu_slots=8,
            held=REFS[:2], held_slots=[3, 4]),
    p.Lookup(keys=KEYS, lease=False), p.Allocate(tier="gpu", n=3),
    p.Allocate(tier="cpu", blocks=REFS), p.Commit(tier="gpu", blocks=REFS, slots=[0, 1, 2]),
    p.Release(keys=KEYS), p.Release(everything=True), p.Pin(keys=KEYS, ttl_s=2.5),
    p.Pin(keys=KEYS), p.Unpin(keys=KEYS), p.Promote(keys=KEYS),
    p.Signal(session=KEYS[0], keys=KEYS, retention_s=30.0), p.Signal(session=KEYS[1], end=True),
    p.Signal(keys=KEYS, retention_s=5.0, notify=True),
    p.Put(blocks=REFS[:1], durable=True, frames=[b"x" * 10]), p.Get(keys=KEYS), p.Flush(),
    p.Stats(), p.Ping(engine_id="e"), p.Ping(engine_id="e", info=True), p.Cancel(keys=KEYS),
    p.Hello(engine_id="e", model_fingerprint="m", layout={}, gpu_slots=1, info=True),
    p.Forget(slots=[0, 1], keys=KEYS[:2], notify=True),
    p.Commit(tier="gpu", blocks=REFS, slots=[0, 1, 2], notify=True, reserve=True),
    p.Allocate(tier="gpu", n=2, notify=True), p.Release(keys=KEYS, notify=True),
    p.Cancel(keys=KEYS, notify=True), p.Verify(keys=KEYS), p.Verify(keys=KEYS, notify=True),
    p.Lookup(keys=KEYS, verify=True), p.Promote(keys=KEYS, verify=True),
    p.Commit(tier="cpu", blocks=REFS, slots=[0, 1, 2], checksums=[1, 2**64 - 1, 3]),
    p.Tenants(namespaces=KEYS[:2], tenants=KEYS[1:3], labels=["a", "public"], model="tiny"),
    p.Purge(tenant=KEYS[0]), p.Purge(tenant=KEYS[0], model="tiny"),
    p.Ping(engine_id="e", purged_upto=7),
]
REPLIES = [
    p.HelloReply(epoch=5, engine_id="e", restored=1, cpu_shm_name="s", cpu_slot_bytes=8,
                 cpu_num_slots=2, lease_timeout_s=1.5, max_inflight=4, max_keys=9),
    p.LookupReply(where=[0, 1, 2], slots=[-1, 3, 4]),
    p.LookupReply(where=[0, 2], slots=[-1, 3], checksums=[0, 2**64 - 1]),
    p.PromoteReply(slots=[2, -1], checksums=[7, 0]), p.VerifyReply(corrupt=1),
    p.AllocateReply(slots=[1], keys=KEYS[:1], demote_to=[-1]), p.CommitReply(accepted=[True]),
    p.ReleaseReply(released=2), p.PinReply(count=1), p.UnpinReply(count=0),
    p.SignalReply(count=2, retention_s=30.0),
    p.PromoteReply(slots=[2]), p.PutReply(stored=[True], durable=False),
    p.GetReply(found=[True, False], frames=[b"abc"]), p.FlushReply(disk_blocks=3),
    p.StatsReply(epoch=1, engines=0, index_blocks=2, leases=0, tiers={"cpu": {"blocks": 1}},
                 config={}),
    p.PingReply(epoch=1, server_time=2.0, version=1, registered=False),
    p.PingReply(epoch=1, server_time=2.0, version=1, registered=True, tiers=["gpu", "cpu"]),
    p.HelloReply(epoch=5, engine_id="e", restored=0, cpu_shm_name="s", cpu_slot_bytes=8,
                 cpu_num_slots=2, lease_timeout_s=1.5, max_inflight=4, max_keys=9,
                 tiers=["gpu", "cpu", "remote"], remote_latency_s=0.002,
                 remote_bandwidth_bps=1e9),
    p.CancelReply(cancelled=3), p.ForgetReply(forgotten=1),
    p.CommitReply(accepted=[True, True], reserved=[4, -2]),
    p.PingReply(epoch=1, server_time=2.0, version=2, registered=True, purged=KEYS[:1],
                purge_seq=3),
    p.TenantsReply(recorded=2),
    p.PurgeReply(namespaces=1, removed={"gpu": 1, "cpu": 2, "disk": 0, "remote": 3}),
]
V1_PING_REPLY = {"ok", "epoch", "server_time", "version", "registered"}


@pytest.mark.parametrize("msg", REQUESTS, ids=lambda m: type(m).__name__)
def test_every_request_round_trips_exactly(msg: p.Message) -> None:
    frames = [bytes(f) for f in msg.to_wire(42)]
    assert p.decode_request(frames) == (42, msg)


@pytest.mark.parametrize("msg", REPLIES, ids=lambda m: type(m).__name__)
def test_every_reply_round_trips_exactly(msg: p.Message) -> None:
    assert p.decode_reply([bytes(f) for f in msg.to_wire(7)]) == (7, msg)


def test_every_op_has_a_request_and_a_reply_type() -> None:
    assert {type(m).OP for m in REQUESTS} == set(p.request_ops())
    assert {type(m).OP for m in REPLIES} == set(p.request_ops())


def test_an_ack_round_trips_and_omits_what_it_does_not_carry() -> None:
    bare = p.Ack(upto=9, count=2)
    assert set(msgpack.unpackb(bare.to_wire(9)[0])[3]) == {
        "ok", "upto", "count", "error_ids", "error_codes", "error_messages"}
    full = p.Ack(upto=9, count=3, error_ids=[7], error_codes=["bad_field"],
                 error_messages=["x"], reserved_keys=KEYS[:1], reserved_slots=[4],
                 victim_slots=[1], victim_keys=KEYS[1:2], victim_demote_to=[-1])
    assert p.decode_reply(full.to_wire(9)) == (9, full)


def test_fields_added_after_v1_are_sent_only_when_used_so_older_peers_decode_the_rest() -> None:
    """A reply's ``info`` fields travel only to a request that asked for them (``info``), and
    ``info`` only when set: a v1 peer, which refuses unknown fields, never meets them."""
    plain = p.PingReply(epoch=1, server_time=2.0, version=1, registered=True)
    assert set(msgpack.unpackb(plain.to_wire(1)[0])[3]) == V1_PING_REPLY
    assert msgpack.unpackb(p.Ping(engine_id="e").to_wire(1)[0])[3] == {"engine_id": "e"}
    told = p.PingReply(epoch=1, server_time=2.0, version=1, registered=True, tiers=["gpu"])
    assert set(msgpack.unpackb(told.to_wire(1)[0])[3]) == V1_PING_REPLY | {"tiers"}


def test_cancel_and_info_fields_are_validated() -> None:
    hello = msgpack.unpackb(REQUESTS[0].to_wire(3)[0])[3]
    for frames, name in ((_header(V, "cancel", 3, {"keys": [b"short"]}), "keys"),
                         (_header(V, "cancel", 3, {}), "keys"),
                         (_header(V, "ping", 3, {"info": "yes"}), "info"),
                         (_header(V, "hello", 3, {**hello, "info": 1}), "info")):
        with pytest.raises(p.ProtocolError, match=name) as info:
            p.decode_request(frames)
        assert info.value.code == p.ErrorCode.BAD_FIELD
    bad_tiers = _header(V, "ping", 3, {"ok": True, "epoch": 1, "server_time": 2.0, "version": 1,
                                      "registered": True, "tiers": [1]})
    with pytest.raises(p.ProtocolError, match="tiers"):
        p.decode_reply(bad_tiers)


def test_error_reply_decodes_as_error_with_code_and_message() -> None:
    frames = p.ErrorReply("get", "busy", "slow down").to_wire(3)
    assert p.decode_reply(frames) == (3, p.ErrorReply("get", "busy", "slow down"))


def _header(*items: object) -> list[bytes]:
    return [msgpack.packb(list(items), use_bin_type=True)]


BAD = [
    ([b"\xc1garbage"], p.ErrorCode.BAD_MESSAGE, 0),
    ([msgpack.packb({"op": "ping"})], p.ErrorCode.BAD_MESSAGE, 0),
    (_header(9, "ping", 5, {}), p.ErrorCode.BAD_VERSION, 5),
    (_header(V, "frobnicate", 6, {}), p.ErrorCode.UNKNOWN_OP, 6),
    (_header(V, "lookup", 7, {"keys": [b"short"]}), p.ErrorCode.BAD_FIELD, 7),
    (_header(V, "lookup", 8, {"keys": "nope"}), p.ErrorCode.BAD_FIELD, 8),
    (_header(V, "lookup", 9, {}), p.ErrorCode.BAD_FIELD, 9),
    (_header(V, "lookup", 10, {"keys": [], "bogus": 1}), p.ErrorCode.BAD_FIELD, 10),
    (_header(V, "lookup", 11, {"keys": [b"k" * 16] * 5000}), p.ErrorCode.TOO_LARGE, 0),
    ([*_header(V, "ping", 12, {}), b"payload"], p.ErrorCode.BAD_FIELD, 12),
    (_header(V, "pin", 13, {"keys": [], "ttl_s": float("nan")}), p.ErrorCode.BAD_FIELD, 13),
    (_header(V, "commit", 14, {"tier": "gpu", "blocks": [[b"k" * 16]], "slots": [0]}),
     p.ErrorCode.BAD_FIELD, 14),
    ([], p.ErrorCode.BAD_MESSAGE, 0),
    (_header(V, "lookup", 1.5, {"keys": []}), p.ErrorCode.BAD_FIELD, 0),
    (_header(V, "lookup", -5, {"keys": []}), p.ErrorCode.BAD_FIELD, 0),
    (_header(V, "lookup", 2**64 - 1, {"keys": []}), p.ErrorCode.BAD_FIELD, 0),
    (_header(V, "lookup", "7", {"keys": []}), p.ErrorCode.BAD_FIELD, 0),
]


@pytest.mark.parametrize(("frames", "code", "rid"), BAD, ids=[b[1] + str(b[2]) for b in BAD])
def test_bad_requests_raise_protocol_error_with_code_and_request_id(
    frames: list[bytes], code: p.ErrorCode, rid: int
) -> None:
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(frames)
    assert info.value.code == code
    assert info.value.request_id == rid


def test_size_limits_are_enforced() -> None:
    lim = p.Limits(max_header_bytes=64, max_frames=2, max_frame_bytes=8, max_keys=4)
    cases = [
        p.Lookup(keys=KEYS * 2).to_wire(1),  # header over 64 bytes
        p.Put(blocks=REFS[:1], frames=[b"x" * 9]).to_wire(1),  # frame over 8 bytes
        [*p.Ping().to_wire(1), b"a", b"b", b"c"],  # more than 2 frames
    ]
    for frames in cases:
        with pytest.raises(p.ProtocolError) as info:
            p.decode_request(frames, lim)
        assert info.value.code == p.ErrorCode.TOO_LARGE
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(p.Lookup(keys=KEYS * 2).to_wire(1), p.Limits(max_keys=4))
    assert info.value.code == p.ErrorCode.TOO_LARGE


def test_extension_types_are_refused() -> None:
    frames = [msgpack.packb([V, "ping", 1, {"engine_id": msgpack.ExtType(1, b"x")}])]
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request(frames)
    assert info.value.code == p.ErrorCode.BAD_MESSAGE


def test_identifier_limits_leave_room_for_the_routing_id_prefix_and_heartbeat_suffix() -> None:
    longest = (p.ROUTING_ID_PREFIX + b"e" * p.ENGINE_ID_MAX_BYTES + b"#"
               + b"0" * p.ROUTING_ID_NONCE_BYTES + p.HEARTBEAT_SUFFIX)
    assert len(longest) <= p.ROUTING_ID_MAX_BYTES == 255
    ok = p.Hello(engine_id="e" * p.ENGINE_ID_MAX_BYTES, model_fingerprint="f" * 256,
                 layout={}, gpu_slots=1)
    assert p.decode_request(ok.to_wire(1))[1] == ok


@pytest.mark.parametrize(("fields", "name", "code"), [
    ({"engine_id": "e" * 129}, "engine_id", p.ErrorCode.TOO_LARGE),
    ({"engine_id": "\u00e9" * 65}, "engine_id", p.ErrorCode.TOO_LARGE),  # 130 bytes
    ({"engine_id": "a\x00b"}, "engine_id", p.ErrorCode.BAD_FIELD),
    ({"model_fingerprint": "f" * 257}, "model_fingerprint", p.ErrorCode.TOO_LARGE),
    ({"model_fingerprint": "f\x1b[31m"}, "model_fingerprint", p.ErrorCode.BAD_FIELD),
], ids=["engine_id_long", "engine_id_utf8", "engine_id_control", "fingerprint_long",
        "fingerprint_control"])
def test_identifiers_over_their_limits_raise_naming_the_field(
        fields: dict, name: str, code: p.ErrorCode) -> None:
    hello = {"engine_id": "e", "model_fingerprint": "m", "layout": {}, "gpu_slots": 1} | fields
    with pytest.raises(p.ProtocolError) as info:
        p.decode_request([msgpack.packb([V, "hello", 7, hello])])
    assert info.value.code == code and info.value.request_id == 7
    assert f"field {name!r}" in info.value.message


def test_keys_of_another_size_than_key_bytes_are_refused_naming_the_field() -> None:
    for key in (b"k" * (p.KEY_BYTES - 1), b"k" * (p.KEY_BYTES + 1)):
        with pytest.raises(p.ProtocolError, match=r"field 'keys' must be 16 bytes \(KEY_BYTES\)"):
            p.decode_request([msgpack.packb([V, "lookup", 1, {"keys": [key]}])])
