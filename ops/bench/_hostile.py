"""Hostile messages for ``asymcache bench wire``: a seeded, catalogued mix of what a daemon
must refuse (or shrug off) while it keeps serving everyone else.

Each category builds one message at a time and says what must come back
(:class:`Expect`): an error reply with one of some codes (under the request id, or under id 0
when the header gives none the daemon can trust), an ACK listing the request as refused (one-way
requests), an ACK without an error (a one-way request that is well-formed and does nothing), an
``ok`` reply whose contents show it did nothing (``released == 0``, ``accepted`` all false,
...), or no reply at all (a frame so large that the daemon's socket drops the connection:
docs/daemon.md, *Limits*). ``exposed`` marks the documented gap (docs/security.md, *Tenants
are not bound to clients*): another tenant's blocks read successfully.

This tool crafts headers the protocol layer refuses to encode, so it packs them with msgpack
itself (the one place outside ``cacheserver/protocol/`` that does, with the tests).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import msgpack

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout, block_keys, namespace_id

V = p.PROTOCOL_VERSION
LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=16, block_size=16, dtype="float16")
MODEL = "wire-bench-model"
A_GPU_SLOTS = 4  # engine A's pool: every slot of B's GPU blocks is outside it


@dataclass(frozen=True)
class Expect:
    """What a hostile message must get: ``kind`` is ``error`` (an error reply), ``ack_error``
    (an ACK refusing it), ``ack_ok`` (an ACK, no error), ``ok`` (a reply for which ``check``
    holds), ``exposed`` (an ok reply: the documented tenant gap) or ``none`` (no reply)."""

    kind: str
    codes: frozenset[str] = frozenset()
    check: Callable[[p.Reply], bool] | None = None

    def describe(self) -> str:
        codes = "/".join(sorted(self.codes))
        return {"error": f"error {codes}", "ack_error": f"ACK refusing it: {codes}",
                "ack_ok": "ACK, no error", "ok": "ok, no effect", "exposed":
                "ok (tenants not bound: docs/security.md)", "none": "no reply (disconnect)"
                }[self.kind]


@dataclass(frozen=True)
class Hostile:
    """One message: its ``frames``, the socket role that sends it (``anon``: never said HELLO;
    ``engine_a``: engine A's routing id; ``fresh``: a socket of its own), and ``reply_rid``,
    the request id its reply or ACK comes under (0: the header's id is not trusted)."""

    category: str
    sender: str
    frames: list[bytes]
    reply_rid: int
    expect: Expect


@dataclass
class Targets:
    """What hostile messages aim at: engine B's blocks and slots, the good clients' keys, and
    the daemon's limits (``max_keys``, ``max_header_bytes``, ``slot_bytes``,
    ``max_message_bytes``)."""

    b_gpu: list[p.BlockRef]
    b_gpu_slots: list[int]
    b_cpu: list[p.BlockRef]
    b_cpu_slots: list[int]
    b_reserved: list[p.BlockRef]
    b_reserved_slots: list[int]
    tenant_keys: list[bytes]  # the good clients' (other tenants') keys
    max_keys: int
    max_header_bytes: int
    slot_bytes: int
    max_message_bytes: int
    refs: list[p.BlockRef] = field(default_factory=list)  # A's own namespace (never stored)

    def __post_init__(self) -> None:
        self.refs = chain_refs("tenant-a", 32, start=10_000)


def chain_refs(salt: str, n: int, start: int = 0) -> list[p.BlockRef]:
    """``n`` chained blocks of one sequence in the namespace of (MODEL, LAYOUT, ``salt``)."""
    ns = namespace_id(MODEL, LAYOUT, salt)
    tokens = list(range(start, start + n * LAYOUT.block_size))
    keys = block_keys(ns, tokens, LAYOUT.block_size)
    return [p.BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]


def header(version: Any, op: Any, rid: Any, fields_: Any) -> bytes:
    return msgpack.packb([version, op, rid, fields_], use_bin_type=True)


def _enc(ref: p.BlockRef) -> list:
    return [ref.key, ref.namespace, ref.parent, ref.position]


def _err(*codes: str) -> Expect:
    return Expect("error", frozenset(codes))


def _ok(check: Callable[[p.Reply], bool]) -> Expect:
    return Expect("ok", check=check)


BAD_FIELD, TOO_LARGE = _err("bad_field"), _err("too_large")
Built = tuple[str, list[bytes], int, Expect]  # sender, frames, reply_rid, expect
Builder = Callable[[random.Random, Targets, int], Built]


# ---- not a header -------------------------------------------------------------------------
def not_msgpack(rng: random.Random, t: Targets, rid: int) -> Built:
    good = header(V, "ping", rid, {})
    frame = rng.choice([b"", b"\xc1" + rng.randbytes(rng.randrange(40)), good[:-1],
                        b"\xd4\x01\x00" + good])  # unused byte, truncated, extension type
    return "anon", [frame], 0, _err("bad_message")


def not_header(rng: random.Random, t: Targets, rid: int) -> Built:
    obj = rng.choice([7, "ping", {"op": "ping"}, [V, "ping"], [V, "ping", rid, {}, 1], None])
    return "anon", [msgpack.packb(obj, use_bin_type=True)], 0, _err("bad_message")


def fields_not_map(rng: random.Random, t: Targets, rid: int) -> Built:
    raw = rng.choice([[1, 2], "keys", 5, None])
    return "anon", [header(V, "lookup", rid, raw)], rid, _err("bad_message")


def bad_version(rng: random.Random, t: Targets, rid: int) -> Built:
    version = rng.choice([V - 1, V + 1, 0, -1, str(V), None, V + 0.0001])
    return "anon", [header(version, "ping", rid, {})], rid, _err("bad_version")


def unknown_op(rng: random.Random, t: Targets, rid: int) -> Built:
    op = rng.choice(["explode", "ack", "", "LOOKUP", "x" * 40, 5, None, b"ping"])
    return "engine_a", [header(V, op, rid, {})], rid, _err("unknown_op")


def bad_request_id(rng: random.Random, t: Targets, rid: int) -> Built:
    given = rng.choice([-1, -(2**63), 2**63, 2**64 - 1, "7", 1.5, None, [1], b"\x01"])
    return "engine_a", [header(V, "ping", given, {})], 0, BAD_FIELD


# ---- fields -------------------------------------------------------------------------------
def _base(op: str, t: Targets, rng: random.Random) -> dict[str, Any]:
    """Well-typed fields of a request (an ALLOCATE ``n`` and slots inside A's pool)."""
    ref = rng.choice(t.refs)
    key = ref.key
    return {
        "hello": {"engine_id": f"hostile-{rng.randrange(10**6)}", "model_fingerprint": MODEL,
                  "layout": LAYOUT.to_dict(), "gpu_slots": A_GPU_SLOTS},
        "lookup": {"keys": [key], "lease": False}, "allocate": {"tier": "gpu", "n": 1},
        "commit": {"tier": "gpu", "blocks": [_enc(ref)], "slots": [0]},
        "release": {"keys": [key]}, "pin": {"keys": [key], "ttl_s": 1.0},
        "unpin": {"keys": [key]}, "promote": {"keys": [key], "lease": False},
        "verify": {"keys": [key]}, "put": {"blocks": [_enc(ref)]}, "get": {"keys": [key]},
        "forget": {"slots": [0], "keys": [key]}, "cancel": {"keys": [key]},
        "ping": {"engine_id": "hostile-a"}, "flush": {}, "stats": {},
    }[op]


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
    raw = _base(op, t, rng)
    f = rng.choice([f for f in fields(_REQUESTS[op]) if f.name != "frames"])
    raw[f.name] = rng.choice(_WRONG[str(f.type)])
    return "engine_a", [header(V, op, rid, raw)], rid, BAD_FIELD


def missing_or_unknown_field(rng: random.Random, t: Targets, rid: int) -> Built:
    op = rng.choice(list(_REQUESTS))
    raw = _base(op, t, rng)
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
        frames = [header(V, "put", rid, {"blocks": [_enc(r) for r in refs]})]
        return "anon", frames + [b"\0" * t.slot_bytes] * n, rid, TOO_LARGE
    if pick == 7:  # a map over msgpack's 1024 entries
        raw = {f"f{i}": i for i in range(1500)}
        return "anon", [header(V, "lookup", rid, raw)], 0, TOO_LARGE
    pack = msgpack.packb  # nesting deeper than msgpack's stack (written by hand: its packer
    depth = rng.choice([2000, 5000])  # stops at a smaller depth than the unpacker)
    frame = b"\x94" + pack(V) + pack("lookup") + pack(rid) + b"\x81" + pack("keys")
    return "anon", [frame + b"\x91" * depth + b"\x01"], 0, _err("bad_message")


# ---- slots and other engines' blocks ------------------------------------------------------
def _commit(tier: str, refs: list[p.BlockRef], slots: list[int], **more: Any) -> dict:
    return {"tier": tier, "blocks": [_enc(r) for r in refs], "slots": slots, **more}


def _none_accepted(r: p.Reply) -> bool:
    return isinstance(r, p.CommitReply) and not any(r.accepted)


def bad_slots(rng: random.Random, t: Targets, rid: int) -> Built:
    """Negative and out-of-range slots and counts, from engine A (registered)."""
    ref = rng.choice(t.refs)
    slot = rng.choice([-1, -(2**31), A_GPU_SLOTS, 10**6, 2**63 - 1, -(2**63)])
    pick = rng.randrange(6)
    if pick == 0:
        return "engine_a", [header(V, "commit", rid, _commit("gpu", [ref], [slot]))], rid, \
            BAD_FIELD
    if pick == 1:  # a CPU slot nobody reserved for A: refused per block
        raw = _commit("cpu", [ref], [slot])
        return "engine_a", [header(V, "commit", rid, raw)], rid, _ok(_none_accepted)
    if pick == 2:
        raw = {"tier": "gpu", "n": rng.choice([-1, A_GPU_SLOTS + 1, 2**62])}
        return "engine_a", [header(V, "allocate", rid, raw)], rid, BAD_FIELD
    if pick == 3:  # blocks and slots of different lengths
        raw = _commit(rng.choice(["gpu", "cpu"]), [ref, ref], [0])
        return "engine_a", [header(V, "commit", rid, raw)], rid, BAD_FIELD
    if pick == 4:  # checksums that are no xxh3-64 digest
        raw = _commit("cpu", [ref], [0], checksums=[rng.choice([-1, -(2**63)])])
        return "engine_a", [header(V, "commit", rid, raw)], rid, BAD_FIELD
    raw = {"slots": [slot], "keys": [ref.key]}
    return "engine_a", [header(V, "forget", rid, raw)], rid, \
        _ok(lambda r: isinstance(r, p.ForgetReply) and r.forgotten == 0)


def other_engine(rng: random.Random, t: Targets, rid: int) -> Built:
    """Engine B's slots and keys, sent from engine A's socket: refused, or no effect."""
    pick = rng.randrange(8)
    n = rng.randrange(1, 5)
    idx = rng.sample(range(len(t.b_gpu)), n)
    gpu = [t.b_gpu[i] for i in idx]
    gpu_slots = [t.b_gpu_slots[i] for i in idx]
    cpu = [t.b_cpu[i % len(t.b_cpu)] for i in idx]
    cpu_slots = [t.b_cpu_slots[i % len(t.b_cpu)] for i in idx]
    res_i = [i % len(t.b_reserved) for i in idx]
    res = [t.b_reserved[i] for i in res_i]
    res_slots = [t.b_reserved_slots[i] for i in res_i]
    if pick == 0:  # fill B's reservations as if A had them
        raw = _commit("cpu", res, res_slots, checksums=[rng.randrange(1, 2**64)] * n)
        return "engine_a", [header(V, "commit", rid, raw)], rid, _ok(_none_accepted)
    if pick == 1:  # re-confirm B's READY CPU blocks
        raw = _commit("cpu", cpu, cpu_slots)
        return "engine_a", [header(V, "commit", rid, raw)], rid, _ok(_none_accepted)
    if pick == 2:  # B's GPU slot numbers (outside A's pool)
        raw = _commit("gpu", gpu, gpu_slots)
        return "engine_a", [header(V, "commit", rid, raw)], rid, BAD_FIELD
    keys = [r.key for r in rng.choice([gpu, cpu, res])]
    if pick == 3:
        return "engine_a", [header(V, "release", rid, {"keys": keys})], rid, \
            _ok(lambda r: isinstance(r, p.ReleaseReply) and r.released == 0)
    if pick == 4:
        return "engine_a", [header(V, "cancel", rid, {"keys": [r.key for r in res]})], rid, \
            _ok(lambda r: isinstance(r, p.CancelReply) and r.cancelled == 0)
    if pick == 5:
        return "engine_a", [header(V, "verify", rid, {"keys": [r.key for r in cpu]})], rid, \
            _ok(lambda r: isinstance(r, p.VerifyReply) and r.corrupt == 0)
    if pick == 6:
        raw = {"slots": gpu_slots, "keys": [r.key for r in gpu]}
        return "engine_a", [header(V, "forget", rid, raw)], rid, \
            _ok(lambda r: isinstance(r, p.ForgetReply) and r.forgotten == 0)
    return "engine_a", [header(V, "unpin", rid, {"keys": keys})], rid, \
        _ok(lambda r: isinstance(r, p.UnpinReply) and r.count == 0)


def other_tenant(rng: random.Random, t: Targets, rid: int) -> Built:
    """The good clients' keys (other tenants' namespaces) from engine A: writes do nothing;
    reads are answered (tenants are not bound to clients at the daemon)."""
    keys = rng.sample(t.tenant_keys, rng.randrange(1, 5))
    op = rng.choice(["release", "cancel", "verify", "forget", "unpin", "lookup", "get"])
    raw: dict[str, Any] = {"keys": keys}
    if op == "forget":
        raw["slots"] = [rng.randrange(A_GPU_SLOTS) for _ in keys]
    if op == "lookup":
        raw["lease"] = False
    zero = {"release": ("released", p.ReleaseReply), "cancel": ("cancelled", p.CancelReply),
            "verify": ("corrupt", p.VerifyReply), "forget": ("forgotten", p.ForgetReply),
            "unpin": ("count", p.UnpinReply)}
    if op in zero:
        name, cls = zero[op]
        expect = _ok(lambda r: isinstance(r, cls) and getattr(r, name) == 0)
    else:
        expect = Expect("exposed")
    return "engine_a", [header(V, op, rid, raw)], rid, expect


# ---- sessions -----------------------------------------------------------------------------
def one_way(rng: random.Random, t: Targets, rid: int) -> Built:
    """``notify`` variants from engine A: refused in the ACK, no-ops ACKed, or (not
    decodable) an ordinary error reply."""
    pick = rng.randrange(7)
    if pick == 0:
        raw = _commit("gpu", [rng.choice(t.refs)], [rng.choice([-1, A_GPU_SLOTS, 10**9])],
                      notify=True)
        return "engine_a", [header(V, "commit", rid, raw)], rid, Expect(
            "ack_error", frozenset({"bad_field"}))
    if pick == 1:  # a one-way ALLOCATE cpu is refused
        raw = {"tier": "cpu", "blocks": [_enc(rng.choice(t.refs))], "notify": True}
        return "engine_a", [header(V, "allocate", rid, raw)], rid, Expect(
            "ack_error", frozenset({"bad_field"}))
    if pick == 2:  # an asynchronous op cannot be one-way: notify is no field of PUT
        raw = {"blocks": [], "notify": True}
        return "engine_a", [header(V, "put", rid, raw)], rid, BAD_FIELD
    if pick == 3:  # not decodable: an error reply of its own
        raw = {"keys": "everything", "notify": True}
        return "engine_a", [header(V, rng.choice(["release", "cancel", "verify"]), rid, raw)], \
            rid, BAD_FIELD
    keys = [r.key for r in rng.sample(t.b_cpu + t.b_reserved, 3)]
    op = ("release", "cancel", "verify")[pick - 4]
    return "engine_a", [header(V, op, rid, {"keys": keys, "notify": True})], rid, \
        Expect("ack_ok")


_NEEDS_SESSION = ("lookup", "allocate", "commit", "release", "pin", "unpin", "promote", "verify",
                  "put", "forget", "cancel")


def no_hello(rng: random.Random, t: Targets, rid: int) -> Built:
    """Well-formed requests (B's keys included) from a socket that never said HELLO."""
    op = rng.choice(_NEEDS_SESSION)
    raw = _base(op, t, rng)
    if "keys" in raw:
        raw["keys"] = [rng.choice(t.b_cpu).key]
    if op in ("commit", "release", "cancel", "verify", "forget") and rng.random() < 0.3:
        raw["notify"] = True
        return "anon", [header(V, op, rid, raw)], rid, Expect(
            "ack_error", frozenset({"not_registered"}))
    frames = [header(V, op, rid, raw)] + ([b"\0" * LAYOUT.bytes_per_block] if op == "put" else [])
    return "anon", frames, rid, _err("not_registered")


def bad_hello(rng: random.Random, t: Targets, rid: int) -> Built:
    """HELLOs that must not register an engine (nor touch engine B's session)."""
    raw = _base("hello", t, rng)
    raw["engine_id"] = rng.choice([raw["engine_id"], "victim-b", "hostile-a"])
    pick = rng.randrange(6)
    expect = BAD_FIELD
    if pick == 0:
        raw["gpu_slots"], expect = rng.choice([-1, 2**40]), _err("capacity")
    elif pick == 1:
        raw["layout"] = rng.choice([{}, {"num_layers": "x"}, {**LAYOUT.to_dict(), "dtype": "q9"},
                                    {**LAYOUT.to_dict(), "num_layers": 4096}])
        expect = _err("bad_layout")
    elif pick == 2:
        raw["held"], raw["held_slots"] = [_enc(rng.choice(t.refs))], []
    elif pick == 3:
        raw["held"], raw["held_slots"] = [_enc(rng.choice(t.refs))], [A_GPU_SLOTS]
    elif pick == 4:
        raw["engine_id"] = ""
    else:
        raw["model_fingerprint"] = ""
    return rng.choice(["anon", "engine_a"]), [header(V, "hello", rid, raw)], rid, expect


def oversize_frame(rng: random.Random, t: Targets, rid: int) -> Built:
    """A frame over twice the protocol limits: the socket drops the connection, no reply."""
    size = 2 * (t.slot_bytes + t.max_header_bytes) + rng.choice([1, 4096])
    return "fresh", [header(V, "ping", rid, {}), b"\0" * size], rid, Expect("none")


# name -> (builder, weight)
CATEGORIES: dict[str, tuple[Builder, float]] = {
    "not_msgpack": (not_msgpack, 1.0), "not_header": (not_header, 1.0),
    "fields_not_map": (fields_not_map, 0.5), "bad_version": (bad_version, 1.0),
    "unknown_op": (unknown_op, 1.0), "bad_request_id": (bad_request_id, 1.0),
    "wrong_types": (wrong_types, 3.0), "missing_or_unknown_field": (missing_or_unknown_field, 1.0),
    "huge_counts": (huge_counts, 1.5), "bad_slots": (bad_slots, 1.5),
    "other_engine": (other_engine, 2.0), "other_tenant": (other_tenant, 1.5),
    "one_way": (one_way, 1.5), "no_hello": (no_hello, 1.5), "bad_hello": (bad_hello, 1.0),
    "oversize_frame": (oversize_frame, 0.02),
}


def expectations(rng: random.Random, t: Targets) -> dict[str, list[str]]:
    """Per category, what its messages expect (for the table and the JSON)."""
    seen: dict[str, set[str]] = {}
    for name, (build, _) in CATEGORIES.items():
        for _ in range(200):
            seen.setdefault(name, set()).add(build(rng, t, 1)[3].describe())
    return {name: sorted(v) for name, v in seen.items()}


def generate(n: int, seed: int, t: Targets) -> list[tuple[str, Builder]]:
    """The seeded sequence of ``n`` categories (the messages are built when sent, so that a
    sender numbers its own request ids); every category at least once when ``n`` allows."""
    rng = random.Random(seed)
    names = list(CATEGORIES)
    weights = [CATEGORIES[name][1] for name in names]
    order = names[:n] + rng.choices(names, weights, k=max(0, n - len(names)))
    rng.shuffle(order)
    return [(name, CATEGORIES[name][0]) for name in order]
