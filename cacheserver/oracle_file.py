"""The oracle file: the replayed future that the ``belady`` policy of a benchmark daemon reads.

Only the benchmark's ``belady-bound`` configuration writes one (``ops/e2e/oracle.py``) and only
a daemon whose every tier runs ``belady`` reads one (config ``oracle_file``). Format, version 1:
one msgpack map (no pickle: nothing in it executes) of

* ``format``: ``"asymcache-oracle"``, ``version``: 1, ``clock``: ``"monotonic"`` (the due times
  are on ``time.monotonic()``, the clock of the daemon's policies and of the engine's driver);
* ``t0``: the replay's start on that clock, ``lag_s``: how long a due use stays pending before
  it lapses unseen (``cacheserver/policy/belady.py``, :class:`DueTimeOracle`);
* ``uses``: block key (16 bytes) -> the ascending due times of the requests containing it.

Reading is bounded: the file's size, every string, byte string, array and map length are
limited before anything is decoded, and every field is checked. Any problem raises
:class:`OracleFileError` naming ``oracle_file``.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import msgpack

from asymcache.cacheserver.policy.belady import DueTimeOracle
from asymcache.cacheserver.protocol.wire_types import KEY_BYTES

FORMAT, VERSION, CLOCK = "asymcache-oracle", 1, "monotonic"
MAX_FILE_BYTES = 1 << 30
MAX_KEYS = 1 << 24
MAX_USES = 1 << 20  # due times of one key
_HEADER = ("format", "version", "clock", "t0", "lag_s")


class OracleFileError(ValueError):
    """The oracle file is missing, too large, not this format, or malformed."""


def write_oracle(path: str | Path, uses: Mapping[bytes, Sequence[float]], *, t0: float,
                 lag_s: float) -> None:
    """Write ``uses`` (key -> ascending due times) with its header to ``path`` (replaced
    atomically: written beside it, then renamed)."""
    body = {"format": FORMAT, "version": VERSION, "clock": CLOCK, "t0": float(t0),
            "lag_s": float(lag_s),
            "uses": {bytes(k): [float(t) for t in times] for k, times in uses.items()}}
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(msgpack.packb(body, use_bin_type=True))
    os.replace(tmp, path)


def read_oracle(path: str | Path) -> DueTimeOracle:
    """The oracle in ``path``; :class:`OracleFileError` naming ``oracle_file`` otherwise."""
    doc = _load(Path(path))
    _check_header(path, doc)
    uses = doc.get("uses")
    if not isinstance(uses, dict):
        raise _error(path, "uses must be a map of block key to due times")
    return DueTimeOracle({_key(path, k): _times(path, k, v) for k, v in uses.items()},
                         float(doc["lag_s"]))


def _load(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise _error(path, f"{size} bytes, more than {MAX_FILE_BYTES}")
        data = path.read_bytes()
    except OSError as e:
        raise _error(path, f"cannot be read: {e.strerror or e}") from None
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True,
                              max_str_len=64, max_bin_len=KEY_BYTES, max_array_len=MAX_USES,
                              max_map_len=MAX_KEYS, max_ext_len=0)
    except (ValueError, msgpack.UnpackException) as e:
        raise _error(path, f"not a msgpack oracle file ({type(e).__name__}: {e})") from None
    if not isinstance(doc, dict):
        raise _error(path, "not a msgpack map")
    return doc


def _check_header(path: str | Path, doc: dict) -> None:
    missing = [k for k in _HEADER if k not in doc]
    if missing:
        raise _error(path, f"header lacks {missing} (is it an {FORMAT} file?)")
    if doc["format"] != FORMAT:
        raise _error(path, f"format {doc['format']!r}, expected {FORMAT!r}")
    if doc["version"] != VERSION:
        raise _error(path, f"version {doc['version']!r}; this daemon reads version {VERSION}")
    if doc["clock"] != CLOCK:
        raise _error(path, f"clock {doc['clock']!r}; the daemon's policies run on {CLOCK!r}")
    for name in ("t0", "lag_s"):
        if not _finite(doc[name]):
            raise _error(path, f"{name} must be a finite number, got {doc[name]!r}")
    if doc["lag_s"] < 0:
        raise _error(path, f"lag_s must be >= 0, got {doc['lag_s']!r}")


def _key(path: str | Path, key: object) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise _error(path, f"every key must be {KEY_BYTES} bytes, got {key!r:.60}")
    return key


def _times(path: str | Path, key: bytes, times: object) -> list[float]:
    if (not isinstance(times, list) or not times
            or not all(_finite(t) for t in times)):
        raise _error(path, f"key {key.hex()}: due times must be a non-empty list of finite "
                           f"numbers")
    if any(b < a for a, b in itertools.pairwise(times)):
        raise _error(path, f"key {key.hex()}: due times must ascend")
    return [float(t) for t in times]


def _finite(value: object) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def _error(path: str | Path, what: str) -> OracleFileError:
    return OracleFileError(f"oracle_file: {path}: {what}")
