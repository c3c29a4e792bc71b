"""Well-formed hostile requests (``asymcache bench wire``, ``_hostile.py``): slots and counts
out of range, engine B's slots and keys sent from engine A, other tenants' keys, one-way
variants, requests from a socket that never said HELLO, and HELLOs that must not register."""

from __future__ import annotations

import random
from typing import Any

from asymcache.cacheserver import protocol as p
from asymcache.ops.bench._hostile import (
    A_GPU_SLOTS,
    BAD_FIELD,
    LAYOUT,
    Built,
    Expect,
    Targets,
    V,
    base_fields,
    enc,
    err,
    header,
    ok_if,
)


# ---- slots and other engines' blocks ------------------------------------------------------
def _commit(tier: str, refs: list[p.BlockRef], slots: list[int], **more: Any) -> dict:
    return {"tier": tier, "blocks": [enc(r) for r in refs], "slots": slots, **more}


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
        return "engine_a", [header(V, "commit", rid, raw)], rid, ok_if(_none_accepted)
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
        ok_if(lambda r: isinstance(r, p.ForgetReply) and r.forgotten == 0)


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
        return "engine_a", [header(V, "commit", rid, raw)], rid, ok_if(_none_accepted)
    if pick == 1:  # re-confirm B's READY CPU blocks
        raw = _commit("cpu", cpu, cpu_slots)
        return "engine_a", [header(V, "commit", rid, raw)], rid, ok_if(_none_accepted)
    if pick == 2:  # B's GPU slot numbers (outside A's pool)
        raw = _commit("gpu", gpu, gpu_slots)
        return "engine_a", [header(V, "commit", rid, raw)], rid, BAD_FIELD
    keys = [r.key for r in rng.choice([gpu, cpu, res])]
    if pick == 3:
        return "engine_a", [header(V, "release", rid, {"keys": keys})], rid, \
            ok_if(lambda r: isinstance(r, p.ReleaseReply) and r.released == 0)
    if pick == 4:
        return "engine_a", [header(V, "cancel", rid, {"keys": [r.key for r in res]})], rid, \
            ok_if(lambda r: isinstance(r, p.CancelReply) and r.cancelled == 0)
    if pick == 5:
        return "engine_a", [header(V, "verify", rid, {"keys": [r.key for r in cpu]})], rid, \
            ok_if(lambda r: isinstance(r, p.VerifyReply) and r.corrupt == 0)
    if pick == 6:
        raw = {"slots": gpu_slots, "keys": [r.key for r in gpu]}
        return "engine_a", [header(V, "forget", rid, raw)], rid, \
            ok_if(lambda r: isinstance(r, p.ForgetReply) and r.forgotten == 0)
    return "engine_a", [header(V, "unpin", rid, {"keys": keys})], rid, \
        ok_if(lambda r: isinstance(r, p.UnpinReply) and r.count == 0)


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
        expect = ok_if(lambda r: isinstance(r, cls) and getattr(r, name) == 0)
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
        raw = {"tier": "cpu", "blocks": [enc(rng.choice(t.refs))], "notify": True}
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
    raw = base_fields(op, t, rng)
    if "keys" in raw:
        raw["keys"] = [rng.choice(t.b_cpu).key]
    if op in ("commit", "release", "cancel", "verify", "forget") and rng.random() < 0.3:
        raw["notify"] = True
        return "anon", [header(V, op, rid, raw)], rid, Expect(
            "ack_error", frozenset({"not_registered"}))
    frames = [header(V, op, rid, raw)] + ([b"\0" * LAYOUT.bytes_per_block] if op == "put" else [])
    return "anon", frames, rid, err("not_registered")


def bad_hello(rng: random.Random, t: Targets, rid: int) -> Built:
    """HELLOs that must not register an engine (nor touch engine B's session)."""
    raw = base_fields("hello", t, rng)
    raw["engine_id"] = rng.choice([raw["engine_id"], "victim-b", "hostile-a"])
    pick = rng.randrange(6)
    expect = BAD_FIELD
    if pick == 0:
        raw["gpu_slots"], expect = rng.choice([-1, 2**40]), err("capacity")
    elif pick == 1:
        raw["layout"] = rng.choice([{}, {"num_layers": "x"}, {**LAYOUT.to_dict(), "dtype": "q9"},
                                    {**LAYOUT.to_dict(), "num_layers": 4096}])
        expect = err("bad_layout")
    elif pick == 2:
        raw["held"], raw["held_slots"] = [enc(rng.choice(t.refs))], []
    elif pick == 3:
        raw["held"], raw["held_slots"] = [enc(rng.choice(t.refs))], [A_GPU_SLOTS]
    elif pick == 4:
        raw["engine_id"] = ""
    else:
        raw["model_fingerprint"] = ""
    return rng.choice(["anon", "engine_a"]), [header(V, "hello", rid, raw)], rid, expect
