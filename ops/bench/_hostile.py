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

This module is the vocabulary (what a hostile message is and what it aims at, and how its
frames are packed); the categories are in ``_hostile_malformed.py`` (frames, headers, fields
and sizes the protocol refuses) and ``_hostile_session.py`` (well-formed requests aimed at
other engines' slots, other tenants' blocks, one-way variants and registration), and their
seeded mix in ``_hostile_mix.py``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
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


def enc(ref: p.BlockRef) -> list:
    return [ref.key, ref.namespace, ref.parent, ref.position]


def err(*codes: str) -> Expect:
    return Expect("error", frozenset(codes))


def ok_if(check: Callable[[p.Reply], bool]) -> Expect:
    return Expect("ok", check=check)


BAD_FIELD, TOO_LARGE = err("bad_field"), err("too_large")
Built = tuple[str, list[bytes], int, Expect]  # sender, frames, reply_rid, expect
Builder = Callable[[random.Random, Targets, int], Built]


def base_fields(op: str, t: Targets, rng: random.Random) -> dict[str, Any]:
    """Well-typed fields of a request (an ALLOCATE ``n`` and slots inside A's pool)."""
    ref = rng.choice(t.refs)
    key = ref.key
    return {
        "hello": {"engine_id": f"hostile-{rng.randrange(10**6)}", "model_fingerprint": MODEL,
                  "layout": LAYOUT.to_dict(), "gpu_slots": A_GPU_SLOTS},
        "lookup": {"keys": [key], "lease": False}, "allocate": {"tier": "gpu", "n": 1},
        "commit": {"tier": "gpu", "blocks": [enc(ref)], "slots": [0]},
        "release": {"keys": [key]}, "pin": {"keys": [key], "ttl_s": 1.0},
        "unpin": {"keys": [key]}, "promote": {"keys": [key], "lease": False},
        "verify": {"keys": [key]}, "put": {"blocks": [enc(ref)]}, "get": {"keys": [key]},
        "forget": {"slots": [0], "keys": [key]}, "cancel": {"keys": [key]},
        "ping": {"engine_id": "hostile-a"}, "flush": {}, "stats": {},
    }[op]
