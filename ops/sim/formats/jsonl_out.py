"""Write any ``Trace`` as Mooncake-superset JSONL that ``load_trace`` reads back field for field.

Fields at their defaults are left out; ``block_size`` is written (on every line) only when it
is not 512. ``hash_ids`` lists the full blocks only (a trace holds no id for the partial block).
Session ids are written as the ints they are; the loader numbers them 0, 1, 2... in order of
first appearance, so a trace numbered otherwise (the azure synthesis uses a session's first
request index) comes back with the same grouping under new numbers.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from asymcache.ops.sim.formats.mooncake import MOONCAKE_BLOCK_TOKENS
from asymcache.ops.sim.trace import Request, Trace


def dump_mooncake(trace: Trace, path: str | Path) -> None:
    """Write ``trace`` to ``path``, one request per line."""
    with Path(path).open("w") as fh:
        for req in trace:
            fh.write(mooncake_line(req, trace.block_tokens) + "\n")


def mooncake_line(req: Request, block_tokens: int) -> str:
    """One request as a JSON object (no newline); the timestamp first, as in Mooncake."""
    rec: dict[str, object] = {"input_length": req.input_tokens,
                              "output_length": req.output_tokens, "hash_ids": list(req.blocks)}
    if block_tokens != MOONCAKE_BLOCK_TOKENS:
        rec["block_size"] = block_tokens
    if req.session != -1:
        rec["session_id"] = req.session
    if req.session_end:
        rec["session_end"] = True
    if req.retention_s:
        rec["retention_s"] = req.retention_s
    if req.pin_ttl_s:
        rec["pin_ttl_s"] = req.pin_ttl_s
    if req.stop:
        rec["stop"] = req.stop
    return '{"timestamp": ' + timestamp_ms(req.arrival_s) + ", " + json.dumps(rec)[1:]


def timestamp_ms(arrival_s: float) -> str:
    """``arrival_s`` in ms as JSON text the loader turns back into exactly ``arrival_s``.

    An int when ``ms / 1000.0`` gives it back; otherwise the shortest decimal of ``arrival_s``
    with its point moved three places (the loader scales decimals exactly).
    """
    ms = round(arrival_s * 1000)
    if ms / 1000.0 == arrival_s:
        return str(ms)
    return format(Decimal(repr(arrival_s)).scaleb(3), "f")
