"""The process faults of the soak, and how any fault is run and recorded.

Each fault is a function of a :class:`FaultContext` returning what it measured; :func:`inject`
adds ``kind`` and ``at_s`` (load seconds when it began), turns an exception into
``recovered: False`` with the error, and logs one line. ``recovery_s`` is counted from the
moment the fault's condition ends: at once for a kill (the restart follows immediately), when a
held fault is lifted (the Redis node restarted, the disk limit raised).

* ``daemon_kill`` — SIGKILL, restart on the same endpoint and data folder: ``serving_s`` (to its
  first PING reply, limit 10 s) and ``engines_back_s`` (from then until the new daemon counts
  every engine registered and each says it is connected, limit 5 s); recovered if both hold.
* ``daemon_restart_mid_fetch`` — a burst of recent prompts (their blocks are in the tiers, mostly
  not in the engines' pools) is sent, and as soon as the daemon's hit or promotion counters move
  the daemon is restarted (SIGTERM, graceful) while those requests are in flight; measured as a
  kill. Their outputs are checked like every other request's.
* ``engine_kill`` — one engine (in turn) stops getting requests, is SIGKILLed, restarted on its
  port, waits for ``/health`` and its daemon link; requests in flight at it between those two
  moments are the expected failures (``window``).
* ``redis_node_kill`` — SIGKILL of one node (in turn) for ``hold_s`` under load, restart (same
  port and ``nodes.conf``); recovered when the cluster is ``ok`` and the daemon's writes reach
  the restarted node again (it came back empty; a block key appears on it).
"""

from __future__ import annotations

import itertools
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

from asymcache.ops.bench.redis_cluster import LocalRedisCluster
from asymcache.ops.soak.config import SoakConfig
from asymcache.ops.soak.load import Load
from asymcache.ops.soak.stack import Stack
from asymcache.ops.soak.tenancy import Mix

Fault = Callable[["FaultContext"], dict]
FAULTS: dict[str, Fault] = {}
BURST_PER_TENANT = 4


@dataclass
class FaultContext:
    cfg: SoakConfig
    stack: Stack
    load: Load
    mix: Mix
    log: Callable[[str], None]
    _turns: dict[str, itertools.count] = field(default_factory=dict)

    def turn(self, what: str, n: int) -> int:
        """The next of ``n`` things to break, in turn (engines, Redis nodes)."""
        return next(self._turns.setdefault(what, itertools.count())) % n


def fault(kind: str) -> Callable[[Fault], Fault]:
    def register(fn: Fault) -> Fault:
        FAULTS[kind] = fn
        return fn
    return register


def inject(kind: str, ctx: FaultContext) -> dict:
    at = ctx.load.now()
    try:
        rec = {"kind": kind, "at_s": round(at, 2), **FAULTS[kind](ctx)}
    except Exception as e:  # a fault that could not run is not recovered
        rec = {"kind": kind, "at_s": round(at, 2), "recovered": False, "recovery_s": None,
               "error": f"{type(e).__name__}: {e}",
               "traceback": traceback.format_exc(limit=6)}
    rec["took_s"] = round(ctx.load.now() - at, 2)
    ok = "recovered" if rec["recovered"] else "NOT RECOVERED"
    took = "-" if rec.get("recovery_s") is None else f"{rec['recovery_s']:.2f} s"
    ctx.log(f"fault {kind} at {at:.1f} s: {ok} (recovery {took})"
            + (f" {rec['error']}" if rec.get("error") else ""))
    return rec


def restart_measured(ctx: FaultContext, kill: bool,
                     while_down: Callable[[], None] | None = None) -> dict:
    """A daemon restart with the issue's two limits checked (see the module docstring)."""
    lim = ctx.cfg.limits
    before = ctx.stack.engine_links()
    got = ctx.stack.restart_daemon(kill, while_down)
    back = ctx.stack.wait_engines_back(sorted(before), max(30.0, 4 * lim.engines_back_s))
    got["engines_back_s"] = None if back is None else round(back, 3)
    got["engines"] = len(before)
    if back is None:  # what each engine said, (connected, registrations again), and the daemon
        after = ctx.stack.engine_links()
        got["links"] = {str(i): [before[i], after.get(i)] for i in before}
        got["daemon_engines"] = ctx.stack.daemon_stats()["engines"]
    got["recovered"] = got["serving_s"] <= lim.daemon_serving_s and back is not None \
        and back <= lim.engines_back_s
    got["recovery_s"] = None if back is None else round(got["serving_s"] + back, 3)
    return got


@fault("daemon_kill")
def daemon_kill(ctx: FaultContext) -> dict:
    return restart_measured(ctx, kill=True)


def _fetch_count(metrics: dict[str, float]) -> float:
    """CPU, disk and remote hits plus promotions so far (the daemon's counters)."""
    return sum(v for k, v in metrics.items()
               if (k.startswith("asymcache_tier_hits_total") and "tier=gpu" not in k)
               or k.startswith("asymcache_tier_promotions_total"))


@fault("daemon_restart_mid_fetch")
def daemon_restart_mid_fetch(ctx: FaultContext) -> dict:
    pairs = [(t, p) for t in range(len(ctx.stack.salts))
             for p in ctx.mix.recent(t)[:BURST_PER_TENANT]]  # the oldest of the recent
    before = _fetch_count(ctx.stack.daemon_metrics())
    threads = ctx.load.burst(pairs)
    t0, seen = time.monotonic(), False
    while time.monotonic() - t0 < 5.0 and not seen:
        seen = _fetch_count(ctx.stack.daemon_metrics()) > before
        if not seen:
            time.sleep(0.01)
    in_flight = sum(t.is_alive() for t in threads)
    got = restart_measured(ctx, kill=False)
    for t in threads:
        t.join()
    return {**got, "burst": len(pairs), "fetches_seen_before_restart": seen,
            "burst_in_flight_at_restart": in_flight}


@fault("engine_kill")
def engine_kill(ctx: FaultContext) -> dict:
    """Requests go to the engine again only once it serves and is linked; if it never does, it
    stays out (window open to the end of the run)."""
    lim, load = ctx.cfg.limits, ctx.load
    i = ctx.turn("engine", len(ctx.stack.engines))
    engine = ctx.stack.engines[i]
    down = load.mark_down(i)
    t0 = time.monotonic()
    engine.kill()
    try:
        engine.start()
        healthy = engine.wait_healthy(lim.engine_restart_s)
    except (RuntimeError, TimeoutError) as e:
        return {"engine": i, "window": [round(down, 3), None], "recovered": False,
                "recovery_s": None, "error": str(e)}
    connected = wait_for(lambda: engine.link()[0], 30.0)
    up = load.mark_up(i)
    return {"engine": i, "window": [round(down, 3), round(up, 3)],
            "healthy_s": round(healthy, 3),
            "connected_s": None if connected is None else round(connected, 3),
            "recovered": connected is not None, "recovery_s": round(time.monotonic() - t0, 3)}


@fault("redis_node_kill")
def redis_node_kill(ctx: FaultContext) -> dict:
    cluster, lim = ctx.stack.cluster, ctx.cfg.limits
    if cluster is None:
        raise RuntimeError("no Redis cluster in this run")
    i = ctx.turn("redis", len(cluster.ports))
    errors0 = _remote_errors(ctx.stack)
    cluster.stop_node(i)
    time.sleep(ctx.cfg.hold_s)
    errors = _remote_errors(ctx.stack) - errors0
    t0 = time.monotonic()
    cluster.start_node(i)
    cluster.wait_ok(20.0)
    ok_s = time.monotonic() - t0
    used = wait_for(lambda: _holds_blocks(cluster, i), lim.redis_back_s, every_s=0.2)
    serving = ctx.stack.daemon_stats()["tiers"]["remote"].get("ready", True)
    return {"node": i, "held_s": ctx.cfg.hold_s, "remote_errors_while_down": errors,
            "cluster_ok_s": round(ok_s, 3), "remote_ready": serving,
            "recovered": used is not None and bool(serving),
            "recovery_s": None if used is None else round(ok_s + used, 3)}


def _holds_blocks(cluster: LocalRedisCluster, node: int) -> bool:
    """Whether node ``node`` holds a block (a key of the remote tier that is not one of its
    load probes, which the daemon writes when it connects)."""
    cursor = 0
    while True:
        cursor, keys = cluster.command(node, "SCAN", cursor, "MATCH", "asymcache:*",
                                       "COUNT", 1000)
        if any(b"probe:" not in k for k in keys):
            return True
        if int(cursor) == 0:
            return False


def _remote_errors(stack: Stack) -> int:
    return sum(stack.daemon_stats()["tiers"].get("remote", {}).get("errors", {}).values())


def wait_for(predicate: Callable[[], bool], timeout_s: float, every_s: float = 0.05
          ) -> float | None:
    """Seconds until ``predicate()`` holds (exceptions count as not yet), None on timeout."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        try:
            if predicate():
                return time.monotonic() - t0
        except Exception:  # not answering yet is "not yet"
            pass
        time.sleep(every_s)
    return None
