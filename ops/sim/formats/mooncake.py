"""Mooncake FAST'25 traces and their superset: one JSON object per line.

Mooncake fields: ``timestamp`` (ms), ``input_length``, ``output_length`` and ``hash_ids`` (one
id per block, prefix-chained). Optional fields of the superset (docs/policy.md, "Trace format"):
``block_size`` (default 512, the same on every line), ``session_id`` (string or int, numbered
0, 1, 2... in order of first appearance), ``session_end``, ``retention_s``, ``pin_ttl_s`` and
``stop``. Other keys are ignored. Option ``sessions=chain`` rebuilds sessions from prefix
chains (``chains.chain_sessions``) for files without ``session_id``.

Only full blocks are cacheable: a request keeps ``input_length // block_size`` leading ids; the
last, partial block is computed every time (in the conversation trace its id recurs as a full
block 8 times out of 11,913).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from asymcache.ops.sim.formats.chains import chain_sessions
from asymcache.ops.sim.formats.options import apply_options
from asymcache.ops.sim.trace import Request, Trace, register_format

MOONCAKE_BLOCK_TOKENS = 512  # traces/README.md: "one per 512-token block"


@dataclass(frozen=True)
class MooncakeOptions:
    """Loader options: ``sessions`` is ``none`` (only ``session_id``) or ``chain``."""

    sessions: str = "none"

    def __post_init__(self) -> None:
        if self.sessions not in ("none", "chain"):
            raise ValueError(f"option sessions={self.sessions!r}: expected none or chain")


@dataclass(frozen=True)
class _Line:
    """One parsed record: the request (session still unset), its raw session id and block size."""

    request: Request
    session_id: str | int | None
    block_size: int
    lineno: int


@register_format("mooncake")
def load_mooncake(source: str, opts: dict[str, str]) -> Trace:
    """Read a Mooncake (superset) JSONL file; errors name ``file:line`` and the field."""
    options = apply_options(MooncakeOptions(), opts)
    lines = _read_lines(source)
    block_size = _check_block_size(lines, source)
    requests = _number_sessions(lines)
    with_ids = next((ln for ln in lines if ln.session_id is not None), None)
    if options.sessions == "chain":
        if with_ids is not None:
            raise ValueError(f"{source}:{with_ids.lineno}: option sessions=chain is for traces "
                             "without session_id, and this one has session_id; drop the option")
        requests = chain_sessions(requests)
    return Trace(Path(source).stem, block_size, requests,
                 description=f"Mooncake trace {Path(source).name}", params=asdict(options))


def _read_lines(source: str) -> list[_Line]:
    out = []
    with Path(source).open() as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                out.append(_parse(line, lineno, f"{source}:{lineno}"))
    return out


def _check_block_size(lines: list[_Line], source: str) -> int:
    if not lines:
        return MOONCAKE_BLOCK_TOKENS
    first = lines[0]
    for ln in lines:
        if ln.block_size != first.block_size:
            raise ValueError(
                f"{source}:{ln.lineno}: block_size {ln.block_size} differs from "
                f"{first.block_size} on line {first.lineno}; every line must give the same "
                f"block_size (a line without it means {MOONCAKE_BLOCK_TOKENS})")
    return first.block_size


def _number_sessions(lines: list[_Line]) -> list[Request]:
    numbers: dict[str | int, int] = {}
    out = []
    for ln in lines:
        if ln.session_id is None:
            out.append(ln.request)
            continue
        session = numbers.setdefault(ln.session_id, len(numbers))
        out.append(replace(ln.request, session=session))
    return out


def _parse(line: str, lineno: int, where: str) -> _Line:
    try:
        rec = json.loads(line, parse_float=Decimal)
        ts, n_in, n_out = rec["timestamp"], rec["input_length"], rec["output_length"]
        ids = rec["hash_ids"]
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(f"{where}: not a Mooncake record ({exc!r})") from None
    if not isinstance(ids, list) or not all(_is_int(h) for h in ids):
        raise ValueError(f"{where}: hash_ids must be a list of ints")
    if not _is_int(n_in) or n_in <= 0:
        raise ValueError(f"{where}: input_length must be a positive int, got {n_in!r}")
    if not _is_int(n_out) or n_out < 0:
        raise ValueError(f"{where}: output_length must be an int >= 0, got {n_out!r}")
    block_size = rec.get("block_size", MOONCAKE_BLOCK_TOKENS)
    if not _is_int(block_size) or block_size <= 0:
        raise ValueError(f"{where}: block_size must be a positive int, got {block_size!r}")
    session_id = rec.get("session_id")
    if session_id is not None and not (_is_int(session_id) or isinstance(session_id, str)):
        raise ValueError(f"{where}: session_id must be a string or an int, got {session_id!r}")
    full = min(len(ids), n_in // block_size)
    req = Request(_arrival_s(ts, where), tuple(ids[:full]), n_in, n_out,
                  pin_ttl_s=_duration(rec, "pin_ttl_s", where),
                  session_end=_typed(rec, "session_end", bool, False, where),
                  retention_s=_duration(rec, "retention_s", where),
                  stop=_typed(rec, "stop", str, "", where))
    return _Line(req, session_id, block_size, lineno)


def _arrival_s(ts: object, where: str) -> float:
    """Milliseconds to seconds; a decimal is scaled exactly, so ``dump_mooncake`` round-trips."""
    if _is_int(ts):
        return ts / 1000.0  # type: ignore[operator]
    if isinstance(ts, Decimal) and ts.is_finite():
        return float(ts.scaleb(-3))
    raise ValueError(f"{where}: timestamp must be a finite number of ms, got {ts!r}")


def _duration(rec: dict[str, object], name: str, where: str) -> float:
    value = rec.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal) \
            or not math.isfinite(value) or value < 0:
        raise ValueError(f"{where}: {name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def _typed(rec: dict[str, object], name: str, kind: type, default: object,
           where: str) -> Any:
    value = rec.get(name, default)
    if type(value) is not kind:
        raise ValueError(f"{where}: {name} must be a {kind.__name__}, got {value!r}")
    return value


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
