"""Mooncake FAST'25 traces: one JSON object per line with ``timestamp`` (ms), ``input_length``,
``output_length`` and ``hash_ids`` (one id per 512-token block, prefix-chained).

Only full blocks are cacheable: a request keeps ``input_length // 512`` leading ids; the last,
partial block is computed every time (in the conversation trace its id recurs as a full block
8 times out of 11,913).
"""

from __future__ import annotations

import json
from pathlib import Path

from asymcache.ops.sim.trace import Request, Trace, register_format

MOONCAKE_BLOCK_TOKENS = 512  # traces/README.md: "one per 512-token block"


@register_format("mooncake")
def load_mooncake(source: str, opts: dict[str, str]) -> Trace:
    """Read a Mooncake JSONL file; errors name the line and the field."""
    if opts:
        raise ValueError(f"the mooncake format takes no options, got {sorted(opts)}")
    requests = []
    with Path(source).open() as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                requests.append(_parse(line, lineno, source))
    return Trace(Path(source).stem, MOONCAKE_BLOCK_TOKENS, requests,
                 description=f"Mooncake trace {Path(source).name}")


def _parse(line: str, lineno: int, source: str) -> Request:
    try:
        rec = json.loads(line)
        ts, n_in, n_out = rec["timestamp"], rec["input_length"], rec["output_length"]
        ids = rec["hash_ids"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{source}:{lineno}: not a Mooncake record ({exc!r})") from None
    if not isinstance(ids, list) or not all(isinstance(h, int) for h in ids):
        raise ValueError(f"{source}:{lineno}: hash_ids must be a list of ints")
    if not isinstance(n_in, int) or n_in <= 0:
        raise ValueError(f"{source}:{lineno}: input_length must be a positive int")
    full = min(len(ids), n_in // MOONCAKE_BLOCK_TOKENS)
    return Request(ts / 1000.0, tuple(ids[:full]), n_in, int(n_out))
