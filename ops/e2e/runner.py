"""Run one configuration on one workload: a fresh daemon (if any), a fresh engine, one replay.

Every run starts from nothing: a new daemon process with its own temporary ipc path and LMDB
folder (removed afterwards) and a new engine whose pool is empty, so no configuration inherits
another's cache. The engine is warmed up first with a prompt shorter than one block (it leaves
nothing in any cache). Everything started is stopped in ``finally`` blocks, also on Ctrl-C.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from asymcache.ops.e2e.configs import BenchConfig, Capacities, lmdb_entry_bytes
from asymcache.ops.e2e.driver import Outcome, Replay, replay
from asymcache.ops.e2e.oracle import LAG_MIN_S, write_workload_oracle
from asymcache.ops.e2e.rpc_timer import install
from asymcache.ops.e2e.workload import Workload

if TYPE_CHECKING:
    from asymcache.engine.engine import LLMEngine


@dataclass(frozen=True)
class RunSetup:
    """What every configuration shares: model, this machine's cost profile, capacities and the
    engine's batch limits. ``target_step_s`` is the adaptive chunker's step-time objective."""

    capacities: Capacities
    cost_model: str
    model: str = "builtin"
    cpu_threads: int = 1
    target_step_s: float = 0.04
    max_num_seqs: int = 32
    max_num_batched_tokens: int = 2048
    lookup_mirror: bool = True  # daemons publish KV events; engines skip LOOKUPs that cannot hit
    signals: bool = True  # clients send sessions, retention and ends; daemons rank by them
    oracle_lag_s: float = LAG_MIN_S  # how long a due use stays pending in B's oracle

    def policy(self, cfg: BenchConfig) -> str | None:
        """The daemon policy of ``cfg`` here: its ``signal_policy`` where signals are on."""
        return cfg.signal_policy if self.signals and cfg.signal_policy else cfg.policy

    def engine_options(self, cfg: BenchConfig, endpoint: str | None,
                       events: tuple[str, str] | None = None) -> dict[str, Any]:
        """``EngineConfig`` fields of ``cfg`` on this setup (a bound's pool holds everything);
        ``events``: the daemon's events and replay endpoints, for the engine's LOOKUP mirror."""
        caps = self.capacities
        mirror = {"events_endpoint": events[0], "events_replay_endpoint": events[1]} \
            if events else {}
        return {"model": self.model, "cpu_threads": self.cpu_threads,
                "num_gpu_blocks": caps.all_blocks if cfg.bound else caps.gpu_blocks,
                "cost_model": self.cost_model,
                "target_step_s": self.target_step_s, "max_num_seqs": self.max_num_seqs,
                "max_num_batched_tokens": self.max_num_batched_tokens,
                "cache_endpoint": endpoint, **mirror, **cfg.engine}


@dataclass
class ConfigRun:
    """One configuration's replay, the daemon's final STATS and its counters from ``/metrics``
    (``asymcache_tier_promotions_total``: blocks the engine fetched from disk); ``None``
    without a daemon."""

    config: BenchConfig
    replay: Replay
    daemon_stats: dict | None
    daemon_counters: dict[str, float] | None = None
    rpc: dict[str, dict[str, float]] | None = None  # engine -> daemon round trips, per op
    policy: str | None = None  # the daemon's policy as run (RunSetup.policy)
    oracle_lag_s: float | None = None  # B's oracle lag as run (configurations with an oracle)


def run_config(cfg: BenchConfig, workload: Workload, setup: RunSetup, *, margins: bool = False,
               on_done: Callable[[Outcome], None] | None = None,
               log: Callable[[str], None] | None = None) -> ConfigRun:
    """Replay ``workload`` under ``cfg`` (side effects: a daemon process while it runs; ``log``
    hears when it started and stopped)."""
    with _daemon(cfg, setup, workload, log) as (endpoint, metrics_url, events, t0):
        engine = build_engine(cfg, setup, endpoint, events)
        try:
            warm_up(engine)
            timer = install(engine)
            result = replay(engine, workload, margins=margins, on_done=on_done,
                            signals=setup.signals, t0=t0)
            rpc = timer.totals() if timer is not None else None
            stats = _daemon_stats(endpoint) if endpoint else None
            counters = _scrape(metrics_url) if metrics_url else None
        finally:
            engine.close()
    return ConfigRun(cfg, result, stats, counters, rpc, setup.policy(cfg),
                     setup.oracle_lag_s if cfg.oracle else None)


def build_engine(cfg: BenchConfig, setup: RunSetup, endpoint: str | None,
                 events: tuple[str, str] | None = None) -> LLMEngine:
    from asymcache.engine.config import EngineConfig
    from asymcache.engine.engine import LLMEngine

    return LLMEngine(EngineConfig.from_kwargs(**setup.engine_options(cfg, endpoint, events)))


def warm_up(engine: LLMEngine) -> None:
    """One short request (under one block: nothing is cached) to load kernels and the link."""
    from asymcache.engine.sampling import SamplingParams

    ids = list(range(10, 10 + engine.kv.block_size - 1))
    engine.add_request("warm-up", ids, SamplingParams(temperature=0.0, max_tokens=4,
                                                      ignore_eos=True))
    for _ in range(100):
        if any(o.finished for o in engine.step()):
            return
    raise RuntimeError("the warm-up request did not finish in 100 steps")


@contextmanager
def _daemon(cfg: BenchConfig, setup: RunSetup, workload: Workload,
            log: Callable[[str], None] | None
            ) -> Iterator[tuple[str | None, str | None, tuple[str, str] | None, float | None]]:
    """A fresh daemon for ``cfg``: its endpoint, ``/metrics`` URL, (``setup.lookup_mirror``)
    KV events and replay endpoints (``None`` for a configuration without a daemon) and, for a
    configuration given the future (``cfg.oracle``), the ``t0`` its oracle file was written
    for (``ops/e2e/oracle.py``), where the replay must start."""
    if not cfg.uses_daemon:
        yield None, None, None, None
        return
    from asymcache.ops.daemon_process import DaemonProcess

    tmp = tempfile.mkdtemp(prefix="ace2e-")
    port = _free_port()
    caps = setup.capacities
    flags = {**caps.daemon_flags(str(setup.policy(cfg)), lmdb_entry_bytes(caps.block_bytes)),
             "metrics_port": port, "signals": setup.signals}
    events = (f"ipc://{tmp}/events.ipc", f"ipc://{tmp}/replay.ipc") \
        if setup.lookup_mirror else None
    if events is not None:
        flags.update(events_endpoint=events[0], events_replay_endpoint=events[1])
    if cfg.oracle:
        flags["oracle_file"] = f"{tmp}/oracle.msgpack"
    daemon = DaemonProcess(f"ipc://{tmp}/daemon.ipc", f"{tmp}/data", flags=flags,
                           log_path=f"{tmp}/daemon.log")
    try:
        t0 = write_workload_oracle(flags["oracle_file"], workload, setup.engine_options(
            cfg, None), setup.oracle_lag_s) if cfg.oracle else None
        daemon.start()
        if log is not None:
            log(f"daemon pid {daemon.pid} on {daemon.endpoint} (policy {setup.policy(cfg)}, "
                f"signals {'on' if setup.signals else 'off'})")
        yield daemon.endpoint, f"http://127.0.0.1:{port}/metrics", events, t0
    except Exception:
        _print_log_tail(f"{tmp}/daemon.log")
        raise
    finally:
        code = daemon.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if log is not None and daemon.proc is not None:
            log(f"daemon stopped (exit status {code})")


def _daemon_stats(endpoint: str) -> dict:
    from asymcache.engine.client import CacheClient

    with CacheClient(endpoint, heartbeat=False) as client:
        return client.stats()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(url: str) -> dict[str, float]:
    """Counter samples of the daemon's ``/metrics`` (name with labels -> value)."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        if family.type == "counter":
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[s.name + (f"{{{labels}}}" if labels else "")] = float(s.value)
    return out


def _print_log_tail(path: str, lines: int = 20) -> None:
    import sys

    try:
        with open(path, errors="replace") as fh:
            tail = fh.readlines()[-lines:]
    except OSError:
        return
    if tail:
        print("daemon log (last lines):\n" + "".join(tail), file=sys.stderr)
