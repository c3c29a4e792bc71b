"""The seeded mix of hostile messages that ``asymcache bench wire`` sends: every category of
``_hostile_malformed.py`` and ``_hostile_session.py`` with its weight."""

from __future__ import annotations

import random

from asymcache.ops.bench._hostile import Builder, Targets
from asymcache.ops.bench._hostile_malformed import (
    bad_request_id,
    bad_version,
    fields_not_map,
    huge_counts,
    missing_or_unknown_field,
    not_header,
    not_msgpack,
    oversize_frame,
    unknown_op,
    wrong_types,
)
from asymcache.ops.bench._hostile_session import (
    bad_hello,
    bad_slots,
    no_hello,
    one_way,
    other_engine,
    other_tenant,
)

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
