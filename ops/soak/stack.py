"""The processes of one soak run: a Redis Cluster, one daemon, the engines; restarts.

Everything lives in one temporary folder (short, for ipc paths): the daemon's ipc endpoints,
its data folder (the LMDB disk tier), the API keys file and every log. The daemon is a real
``python -m asymcache.cacheserver`` process (``ops/daemon_process.py``) with CPU, disk and,
when ``redis-server`` is installed, remote tiers (a local three-node cluster,
``ops/bench/redis_cluster.py``); without ``redis-server`` the run has no remote tier and says
so. Engines are ``asymcache engine`` processes (``procs.py``) with API keys binding each
tenant to its ``cache_salt``, and the daemon's KV events for their LOOKUP mirror.

:meth:`Stack.restart_daemon` is every daemon restart of the faults: stop (SIGKILL or SIGTERM),
an optional step while it is down, start on the same endpoint and data folder, and the time
until it answers PING; :meth:`Stack.wait_engines_back` the time until the new daemon counts every
running engine registered and each says it is connected.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from asymcache.ops.bench.redis_cluster import LocalRedisCluster, free_port
from asymcache.ops.daemon_process import DaemonProcess
from asymcache.ops.soak.config import SoakConfig
from asymcache.ops.soak.procs import ENGINE_INFO, EngineProcess, scrape
from asymcache.ops.soak.prompts import TENANTS, ModelKeys

ENGINE_START_S = 120.0


class Stack:
    """See the module docstring. ``log`` hears one line per start and restart."""

    def __init__(self, cfg: SoakConfig, keys: ModelKeys, log: Callable[[str], None]) -> None:
        self.cfg, self.keys, self.log = cfg, keys, log
        self.root = Path(tempfile.mkdtemp(prefix="acsoak-"))
        self.data_dir = str(self.root / "data")
        self.endpoint = f"ipc://{self.root}/daemon.ipc"
        self.events = (f"ipc://{self.root}/events.ipc", f"ipc://{self.root}/replay.ipc")
        self.metrics_port = free_port()
        self.api_keys = [f"sk-soak-t{t}-{secrets.token_hex(12)}" for t in range(TENANTS)]
        self.salts = [f"soak-salt-{t}" for t in range(TENANTS)]
        self.cluster: LocalRedisCluster | None = None
        self.daemon: DaemonProcess | None = None
        self.lifetimes: list[tuple[float, int]] = []  # (start time, pid) of each daemon
        self.engines: list[EngineProcess] = []

    # ---- start-up -------------------------------------------------------------------------
    def start(self) -> None:
        if shutil.which("redis-server") is not None:
            self.cluster = LocalRedisCluster(self.root / "redis").start()
            self.log(f"redis cluster on {','.join(self.cluster.nodes)}")
        else:
            self.log("redis-server is not installed: NO remote tier, no Redis fault "
                     "(apt-get install redis-server)")
        self.start_daemon()
        keys_file = self.root / "api-keys.json"
        keys_file.write_text(json.dumps({k: {"tenant": f"t{t}", "cache_salt": self.salts[t]}
                                         for t, k in enumerate(self.api_keys)}))
        os.chmod(keys_file, 0o600)
        for i in range(self.cfg.engines):
            flags = {"num_gpu_blocks": self.cfg.num_gpu_blocks, "cost_model": "h100-llama3-8b",
                     "cpu_threads": 1, "daemon_timeout_s": 1.0, "log_level": "warning",
                     "engine_id": f"soak-e{i}", "api_keys_file": str(keys_file),
                     "cache_endpoint": self.endpoint, "events_endpoint": self.events[0],
                     "events_replay_endpoint": self.events[1]}
            self.engines.append(EngineProcess(i, free_port(), flags,
                                              str(self.root / f"engine{i}.log")))
        for e in self.engines:
            e.start()
        took = max(e.wait_healthy(ENGINE_START_S) for e in self.engines)
        self.log(f"{len(self.engines)} engines healthy after {took:.1f} s")
        self._check_fingerprint()

    def _check_fingerprint(self) -> None:
        """The engines' model must be the reference's (the probes compute its block keys)."""
        info = [k for k in self.engines[0].metrics() if k.startswith(ENGINE_INFO + "{")]
        want = f"fingerprint={self.keys.fingerprint}"
        if not info or want not in info[0]:
            raise RuntimeError(f"the engines' model is not the reference's: {info} lacks {want}")

    def daemon_flags(self) -> dict[str, object]:
        c = self.cfg
        flags: dict[str, object] = {
            "cpu_bytes": c.cpu_bytes, "cpu_slot_bytes": self.keys.layout.bytes_per_block,
            "disk_bytes": c.disk_bytes, "disk_map_bytes": c.disk_map_bytes,
            "metrics_port": self.metrics_port, "lease_timeout_s": c.lease_timeout_s,
            "events_endpoint": self.events[0], "events_replay_endpoint": self.events[1],
            "events_replay_bytes": c.events_replay_bytes, "log_level": "info"}
        if self.cluster is not None:
            # LRU shares every block: asym's admission would refuse them all here (a loopback
            # load costs more than recomputing a block under the daemon's H100 cost preset)
            flags.update(remote_nodes=",".join(self.cluster.nodes),
                         remote_capacity_bytes=c.remote_bytes, remote_policy="lru")
        return flags

    def start_daemon(self) -> float:
        """Start a daemon on the endpoint; seconds until it answered PING."""
        t0 = time.monotonic()
        self.daemon = DaemonProcess(self.endpoint, self.data_dir, flags=self.daemon_flags(),
                                    log_path=str(self.root / "daemon.log"))
        self.daemon.start(timeout_s=60.0)
        took = time.monotonic() - t0
        self.lifetimes.append((time.monotonic(), self.daemon.pid))
        self.log(f"daemon pid {self.daemon.pid} serving after {took:.2f} s")
        return took

    # ---- restarts -------------------------------------------------------------------------
    def restart_daemon(self, kill: bool, while_down: Callable[[], None] | None = None
                       ) -> dict[str, float]:
        """Stop the daemon (SIGKILL, or SIGTERM: graceful), run ``while_down``, start it
        again: ``stop_s`` (signal to exit), ``serving_s`` (exit, or the end of
        ``while_down``, to its first PING reply)."""
        assert self.daemon is not None
        t0 = time.monotonic()
        code = self.daemon.kill() if kill else self.daemon.stop()
        stop_s = time.monotonic() - t0
        if while_down is not None:
            while_down()
        serving_s = self.start_daemon()
        return {"stop_s": round(stop_s, 3), "exit_status": code, "serving_s": round(serving_s, 3)}

    def engine_links(self) -> dict[int, tuple[bool, float]]:
        """Per running engine: (connected, reconnects so far); engines that do not answer
        ``/metrics`` are left out."""
        out = {}
        for e in self.engines:
            try:
                out[e.index] = e.link()
            except Exception:
                continue
        return out

    def wait_engines_back(self, engines: list[int], timeout_s: float) -> float | None:
        """Seconds until the (new) daemon counts ``engines`` registered and each of them says
        it is connected; None if that takes longer than ``timeout_s``. (An engine may register
        again inside a request that met the restarted daemon, without its link noticing, so
        its reconnect counter is no signal.)"""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            try:
                registered = self.daemon_stats()["engines"]
            except Exception:  # not answering yet
                registered = 0
            if registered >= len(engines):
                now = self.engine_links()
                if all(i in now and now[i][0] for i in engines):
                    return time.monotonic() - t0
            time.sleep(0.05)
        return None

    # ---- daemon views ---------------------------------------------------------------------
    def daemon_stats(self) -> dict:
        from asymcache.engine.client import CacheClient

        with CacheClient(self.endpoint, timeout_s=5.0, heartbeat=False) as client:
            return client.stats()

    def daemon_metrics(self) -> dict[str, float]:
        return scrape(f"http://127.0.0.1:{self.metrics_port}/metrics")

    @property
    def disk_path(self) -> str:
        from asymcache.cacheserver.startup import DISK_DIRNAME

        return os.path.join(self.data_dir, DISK_DIRNAME)

    # ---- teardown -------------------------------------------------------------------------
    def close(self, keep_logs: Path | None = None) -> None:
        """Stop everything (engines, daemon, cluster); copy the logs to ``keep_logs``."""
        for e in self.engines:
            e.stop()
        if self.daemon is not None:
            self.daemon.stop()
        if self.cluster is not None:
            self.cluster.close()
        if keep_logs is not None:
            keep_logs.mkdir(parents=True, exist_ok=True)
            for log in self.root.glob("*.log"):
                shutil.copy(log, keep_logs / log.name)
        shutil.rmtree(self.root, ignore_errors=True)
