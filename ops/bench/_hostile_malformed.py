"""Hostile messages the protocol refuses (``asymcache bench wire``, ``_hostile.py``): frames
that are no msgpack or no header, a version or operation the daemon does not speak, fields of
the wrong type or name, sizes over the daemon's limits, and a frame so large that the socket
drops the connection."""

from __future__ import annotations

import random
from dataclasses import MISSING, fields
from typing import Any

import msgpack

from asymcache.cacheserver import protocol as p
from asymcache.ops.bench._hostile import (
    BAD_FIELD,
    TOO_LARGE,
    Built,
    Expect,
    Targets,
    V,
    base_fields,
    enc,
    err,
    header,
)


# ---- not a header -------------------------------------------------------------------------
def not_msgpack(rng: random.Random, t: Targets, rid: int) -> Built:
    good = header(V, "ping", rid, {})
    frame = rng.choice([b"", b"\xc1" + rng.randbytes(rng.randrange(40)), good[:-1],
                        b"\xd4\x01\x00" + good])  # unused byte, truncated, extension type
    return "anon", [frame], 0, err("bad_message")


def not_header(rng: random.Random, t: Targets, rid: int) -> Built:
    obj = rng.choice([7, "ping", {"op": "ping"}, [V, "ping"], [V, "ping", rid, {}, 1], None])
    return "anon", [msgpack.packb(obj, use_bin_type=True)], 0, err("bad_message")


def fields_not_map(rng: random.Random, t: Targets, rid: int) -> Built:
    raw = rng.choice([[1, 2], "keys", 5, None])
    return "anon", [header(V, "lookup", rid, raw)], rid, err("bad_message")


def bad_version(rng: random.Random, t: Targets, rid: int) -> Built:
    version = rng.choice([V - 1, V + 1, 0, -1, str(V), None, V + 0.0001])
    return "anon", [header(version, "ping", rid, {})], rid, err("bad_version")


def unknown_op(rng: random.Random, t: Targets, rid: int) -> Built:
    op = rng.choice(["explode", "ack", "", "LOOKUP", "x" * 40, 5, None, b"ping"])
    return "engine_a", [header(V, op, rid, {})], rid, err("unknown_op")


def bad_request_id(rng: random.Random, t: Targets, rid: int) -> Built:
    given = rng.choice([-1, -(2**63), 2**63, 2**64 - 1, "7", 1.5, None, [1], b"\x01"])
    return "engine_a", [header(V, "ping", given, {})], 0, BAD_FIELD


# ---- fields -------------------------------------------------------------------------------
_REQUESTS = {cls.OP: cls for cls in (
    p.Hello, p.Lookup, p.Allocate, p.Commit, p.Release, p.Pin, p.Unpin, p.Promote, p.Verify,
    p.Put, p.Get, p.Forget, p.Cancel, p.Ping, p.Flush, p.Stats)}
_K = b"k" * 16
_WRONG: dict[str, list[Any]] = {  # per declared wire type: values it never accepts
    "int": ["7", 1.5, None, True, [1], {"a": 1}],
    "float": ["x", True, [1.0], {"a": 1}, float("nan"), float("inf")],
    "float | None": ["x", True, [1.0], {"a": 1}, float("-inf")],
    "bool": [1, "true", None, [True], {"b": True}],
    "str": [5, [], {"a": "b"}, None, b"gpu"],
    "EngineId": [5, [], None, b"engine", "bad\nid", "\x00"],
    "Fingerprint": [5, [], None, b"model", "bad\x7fmodel"],
    "dict": ["layout", [1, 2], 5, None],
    "list[Key]": ["k", _K, 5, {"a": 1}, [1], [b"short"], [[_K]], [{"k": _K}], [None], [_K + b"x"]],
    "list[int]": ["1", [1.5], [None], [[1]], [{"a": 1}], 3, [True]],
    "list[BlockRef]": [[[_K]], [[_K, _K, None, -1]], [[_K, _K, None, "0"]], [{"key": _K}], "ref",
                       [[b"x", _K, None, 0]], [[_K, _K, b"p", 0]], [[_K, 5, None, 0]], [_K]],
}


def wrong_types(rng: random.Random, t: Targets, rid: int) -> Built:
    op = rng.choice([op for op in _REQUESTS if op not in ("flush", "stats")])
    raw = base_fields(op, t, rng)
    f = rng.choice([f for f in fields(_REQUESTS[op]) if f.name != "frames"])
    raw[f.name] = rng.choice(_WRONG[str(f.type)])
    return "engine_a", [header(V, op, rid, raw)], rid, BAD_FIELD


def missing_or_unknown_field(rng: random.Random, t: Targets, rid: int) -> Built:
    op = rng.choice(list(_REQUESTS))
    raw = base_fields(op, t, rng)
    required = [f.name for f in fields(_REQUESTS[op]) if f.name in raw and f.name != "frames"
                and f.default is MISSING and f.default_factory is MISSING]
    if required and rng.random() < 0.5:
        del raw[rng.choice(required)]
    else:
        raw[rng.choice(["zzz", "ok", "notify_all", "frames", ""])] = 1
    return "engine_a", [header(V, op, rid, raw)], rid, BAD_FIELD


# ---- sizes --------------------------------------------------------------------------------
def huge_counts(rng: random.Random, t: Targets, rid: int) -> Built:
    keys = [ref.key for ref in t.refs]
    pick = rng.randrange(9)
    if pick == 0:  # a list just over max_keys (the decoder) or far over (msgpack's limit)
        over = rng.choice([1, 16, 17, 500])  # past max_keys + 16, msgpack refuses it first
        n = t.max_keys + over
        return ("anon", [header(V, "lookup", rid, {"keys": (keys * n)[:n]})],
                rid if over <= 16 else 0, TOO_LARGE)
    if pick == 1:  # a string over the 4096-character limit
        raw = {"tier": "g" * rng.choice([4097, 9000]), "n": 1}
        return "anon", [header(V, "allocate", rid, raw)], rid, TOO_LARGE
    if pick == 2:  # an engine id over its 128 bytes (multi-byte characters too)
        engine_id = rng.choice(["e" * 129, "\u00e9" * 65, "\U0001f600" * 33])
        return "anon", [header(V, "ping", rid, {"engine_id": engine_id})], rid, TOO_LARGE
    if pick == 3:  # a header over max_header_bytes
        raw = {"engine_id": "e" * (t.max_header_bytes + 10)}
        return "anon", [header(V, "ping", rid, raw)], 0, TOO_LARGE
    if pick == 4:  # more payload frames than max_keys
        return "anon", [header(V, "get", rid, {"keys": []})] + [b"x"] * (t.max_keys + 1), \
            rid, TOO_LARGE
    if pick == 5:  # a payload frame over one CPU slot (under the disconnect limit)
        return "anon", [header(V, "ping", rid, {}), b"\0" * (t.slot_bytes + 1)], rid, TOO_LARGE
    if pick == 6:  # frames within their limits, together over max_message_bytes
        n = t.max_message_bytes // t.slot_bytes + 1
        refs = (t.refs * n)[:n]
        frames = [header(V, "put", rid, {"blocks": [enc(r) for r in refs]})]
        return "anon", frames + [b"\0" * t.slot_bytes] * n, rid, TOO_LARGE
    if pick == 7:  # a map over msgpack's 1024 entries
        raw = {f"f{i}": i for i in range(1500)}
        return "anon", [header(V, "lookup", rid, raw)], 0, TOO_LARGE
    pack = msgpack.packb  # nesting deeper than msgpack's stack (written by hand: its packer
    depth = rng.choice([2000, 5000])  # stops at a smaller depth than the unpacker)
    frame = b"\x94" + pack(V) + pack("lookup") + pack(rid) + b"\x81" + pack("keys")
    return "anon", [frame + b"\x91" * depth + b"\x01"], 0, err("bad_message")


def oversize_frame(rng: random.Random, t: Targets, rid: int) -> Built:
    """A frame over twice the protocol limits: the socket drops the connection, no reply."""
    size = 2 * (t.slot_bytes + t.max_header_bytes) + rng.choice([1, 4096])
    return "fresh", [header(V, "ping", rid, {}), b"\0" * size], rid, Expect("none")
