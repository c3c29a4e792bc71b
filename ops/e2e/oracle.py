"""The replayed future handed to configuration B's daemon (``belady-bound``), and only to it.

The benchmark knows its workload before it runs: every prompt is a fixed list of token ids and
every request is due at ``t0 + arrival_s`` (``driver.py``). So before B's daemon starts, the
runner fixes ``t0`` on ``time.monotonic()`` (the clock of the driver and of the daemon's
policies) a little ahead (:data:`LEAD_S`: the daemon, the engine and its warm-up start
meanwhile), computes the key of every full prompt block of every request exactly as the engine
will (the namespace of the model's fingerprint and KV layout, no ``cache_salt``, the chained
block keys of ``cacheserver/blocks.py``), and writes per key the due times of the requests that
contain it (``cacheserver/oracle_file.py``). The replay then starts at that very ``t0``.

Blocks that only an answer fills are in no later prompt unless a session's next turn repeats
them, and then that turn's prompt lists them: their next use is known too.

The lag (how long a due use stays pending while its request queues, ``DueTimeOracle``) is
:func:`oracle_lag`: the longest request latency of configuration 1 at the same rate (no cache:
the slowest configuration, so no request of B waits longer), times :data:`LAG_FACTOR`, at least
:data:`LAG_MIN_S`. A generous lag costs little, as the daemon consumes a use as soon as it
sees the key used.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from asymcache.cacheserver.blocks import iter_block_keys, namespace_id
from asymcache.cacheserver.oracle_file import write_oracle
from asymcache.ops.e2e.workload import Workload

if TYPE_CHECKING:
    from asymcache.ops.e2e.driver import Outcome

LEAD_S = 8.0  # t0 this far after the file is written: daemon start, engine build, warm-up
LAG_MIN_S = 2.0
LAG_FACTOR = 1.5


def oracle_lag(reference: Sequence[Outcome]) -> float:
    """The lag for B's oracle: :data:`LAG_FACTOR` x the longest latency (due to last token)
    among ``reference`` (configuration 1's outcomes at this rate), at least :data:`LAG_MIN_S`."""
    longest = max((o.token_times[-1] - o.due for o in reference if o.token_times), default=0.0)
    return max(LAG_MIN_S, LAG_FACTOR * longest)


def workload_uses(workload: Workload, namespace: bytes, t0: float) -> dict[bytes, list[float]]:
    """Block key -> ascending due times (``t0 + arrival_s``) of the requests containing it."""
    uses: dict[bytes, list[float]] = {}
    for r in sorted(workload.requests, key=lambda r: r.arrival_s):
        due = t0 + r.arrival_s
        for key in iter_block_keys(namespace, r.prompt, workload.block_size):
            times = uses.setdefault(key, [])
            if not times or times[-1] != due:
                times.append(due)
    return uses


def engine_namespace(options: dict) -> tuple[bytes, int]:
    """``(namespace, block_size)`` of an engine built with ``options`` (``EngineConfig``
    fields) and no ``cache_salt``: its model is loaded once here for its fingerprint."""
    from asymcache.engine.builtin import resolve_model_dir
    from asymcache.engine.config import EngineConfig
    from asymcache.engine.model import load_model

    cfg = EngineConfig.from_kwargs(**options)
    _, info = load_model(resolve_model_dir(cfg.model), cfg.device, cfg.dtype, cfg.attn_backend)
    return namespace_id(info.fingerprint, info.kv_layout(cfg.block_size), ""), cfg.block_size


def write_workload_oracle(path: str | Path, workload: Workload, engine_options: dict,
                          lag_s: float, lead_s: float | None = None) -> float:
    """Write ``workload``'s oracle to ``path`` for an engine of ``engine_options``; returns its
    ``t0`` (``lead_s``, default :data:`LEAD_S`, from now on ``time.monotonic()``), where the
    replay must start."""
    namespace, block_size = engine_namespace(engine_options)
    if block_size != workload.block_size:
        raise ValueError(f"the engine's block_size {block_size} differs from the workload's "
                         f"{workload.block_size}: the oracle's keys would never match")
    t0 = time.monotonic() + (LEAD_S if lead_s is None else lead_s)
    write_oracle(path, workload_uses(workload, namespace, t0), t0=t0, lag_s=lag_s)
    return t0
