"""Hosts of ``asymcache bench preempt`` and the fleet the client sends to.

A :class:`Host` is what a spot instance carries: a daemon (its own CPU and disk tiers; the shared
Redis Cluster as its remote tier when the run shares one) and an engine server behind it
(``asymcache engine`` in a child process, on loopback, the daemon on ``ipc://``). It can be
drained (``POST /v1/admin/drain`` with a deadline), sent SIGTERM, and taken back (SIGKILL to
engine and daemon: nothing of the host survives but what reached the cluster).

The :class:`Fleet` is the router's view: one host in service per slot; a new request goes to
the host in service with the fewest requests in flight; a host under notice is withdrawn at
once, so only the requests it already runs are drained.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from asymcache.ops.daemon_process import DaemonProcess

START_TIMEOUT_S = 120.0
REMOTE_READY_S = 20.0
PICK_TIMEOUT_S = 120.0


def engine_args(options: dict[str, Any]) -> list[str]:
    """``asymcache engine`` flags for ``EngineConfig`` fields (``None`` values left out)."""
    args: list[str] = []
    for name, value in options.items():
        if value is None:
            continue
        if isinstance(value, bool | tuple | list):
            raise ValueError(f"engine option {name}={value!r}: only scalars map to flags here")
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


class Host:
    """A daemon and an engine server (see the module doc); ``name`` e.g. ``h0.1`` (slot 0, the
    first replacement). Side effects: two child processes, files under ``root``."""

    def __init__(self, name: str, root: Path, daemon_flags: dict[str, object],
                 engine_options: dict[str, Any]) -> None:
        self.name, self.root = name, root
        self.daemon = DaemonProcess(f"ipc://{root}/{name}.ipc", str(root / f"{name}-data"),
                                    flags={**daemon_flags, "metrics_port": 0},
                                    log_path=str(root / f"{name}-daemon.log"))
        self.remote = "remote_nodes" in daemon_flags
        self.options = dict(engine_options)
        self.port = _free_port()
        self.engine: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def engine_log(self) -> Path:
        return self.root / f"{self.name}-engine.log"

    def start(self, timeout_s: float = START_TIMEOUT_S) -> Host:
        """Start the daemon (and wait for its remote tier), then the engine; wait until the
        engine's ``/health`` answers 200."""
        self.daemon.start()
        if self.remote:
            self._wait_remote()
        cmd = [sys.executable, "-m", "asymcache.ops.cli", "engine", "--host", "127.0.0.1",
               "--port", str(self.port), "--engine-id", self.name, "--log-level", "warning",
               *engine_args({**self.options, "cache_endpoint": self.daemon.endpoint})]
        with open(self.engine_log, "ab") as log:
            self.engine = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                           start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.engine.poll() is not None:
                raise RuntimeError(f"engine {self.name} exited ({self.engine.returncode}) at "
                                   f"start-up: {self._log_tail()}")
            if _status(f"{self.url}/health") == 200:
                return self
            time.sleep(0.1)
        raise TimeoutError(f"engine {self.name} not healthy within {timeout_s:.0f} s: "
                           f"{self._log_tail()}")

    def _wait_remote(self) -> None:
        from asymcache.engine.client import CacheClient

        deadline = time.monotonic() + REMOTE_READY_S
        with CacheClient(self.daemon.endpoint, heartbeat=False) as client:
            while not client.stats()["tiers"]["remote"]["ready"]:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"daemon {self.name}: remote tier not ready within "
                                       f"{REMOTE_READY_S:.0f} s")
                time.sleep(0.05)

    def drain(self, deadline_s: float) -> dict[str, Any]:
        """``POST /v1/admin/drain``: the engine's reply (``drained_requests``,
        ``bytes_written``, ``flushed``, ``seconds``) plus ``elapsed_s`` seen here, or
        ``error``."""
        body = json.dumps({"deadline_s": deadline_s}).encode()
        req = urllib.request.Request(f"{self.url}/v1/admin/drain", body,
                                     {"Content-Type": "application/json"}, method="POST")
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(req, timeout=deadline_s + 10) as resp:
                reply = json.loads(resp.read())
        except (OSError, ValueError) as e:
            reply = {"error": f"{type(e).__name__}: {e}"}
        return {**reply, "elapsed_s": round(time.monotonic() - t0, 3)}

    def terminate(self) -> None:
        """SIGTERM to the engine (it drains what is left, then exits)."""
        if self.engine is not None and self.engine.poll() is None:
            self.engine.send_signal(signal.SIGTERM)

    def take_back(self) -> None:
        """The host is gone: SIGKILL to the engine and the daemon, both reaped."""
        if self.engine is not None and self.engine.poll() is None:
            self.engine.kill()
            self.engine.wait(10)
        self.daemon.kill()

    def stop(self, timeout_s: float = 20.0) -> None:
        """Orderly end of a run: SIGTERM the engine (SIGKILL after ``timeout_s``), then the
        daemon."""
        if self.engine is not None and self.engine.poll() is None:
            self.engine.send_signal(signal.SIGTERM)
            try:
                self.engine.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.engine.kill()
                self.engine.wait(10)
        self.daemon.stop()

    def _log_tail(self, chars: int = 1500) -> str:
        try:
            return self.engine_log.read_text(errors="replace")[-chars:]
        except OSError:
            return f"(no log at {self.engine_log})"


class Fleet:
    """Hosts in service, one per slot; picks the one with the fewest requests in flight."""

    def __init__(self) -> None:
        self._serving: dict[int, Host] = {}
        self._inflight: dict[str, int] = {}
        self._cond = threading.Condition()

    def serve(self, slot: int, host: Host) -> None:
        with self._cond:
            self._serving[slot] = host
            self._inflight.setdefault(host.name, 0)
            self._cond.notify_all()

    def withdraw(self, slot: int) -> Host | None:
        """No new request goes to ``slot``'s host (a notice): returns it."""
        with self._cond:
            return self._serving.pop(slot, None)

    def serving(self, slot: int) -> bool:
        with self._cond:
            return slot in self._serving

    def wait_serving(self, slot: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while slot not in self._serving:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def pick(self, avoid: str | None = None, timeout_s: float = PICK_TIMEOUT_S) -> Host:
        """The host in service (other than ``avoid`` when there is another) with the fewest
        requests in flight, counted until :meth:`release`; waits for one (bounded)."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not self._serving:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no host in service for {timeout_s:.0f} s")
                self._cond.wait(left)
            hosts = sorted(self._serving.items())
            others = [h for _, h in hosts if h.name != avoid] or [h for _, h in hosts]
            host = min(others, key=lambda h: self._inflight[h.name])
            self._inflight[host.name] += 1
            return host

    def release(self, host: Host) -> None:
        with self._cond:
            self._inflight[host.name] -= 1


def _status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _free_port() -> int:
    from asymcache.ops.bench.redis_cluster import free_port

    return free_port()


def stop_all(hosts: list[Host]) -> None:
    """Stop every host in parallel (an orderly end; each bounded by :meth:`Host.stop`)."""
    threads = [threading.Thread(target=h.stop, daemon=True) for h in hosts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(40)


def start_all(hosts: list[Host]) -> None:
    """Start ``hosts`` two at a time (this machine's cores); raises the first failure after
    stopping every host started."""
    errors: list[BaseException] = []

    def start(host: Host) -> None:
        try:
            host.start()
        except BaseException as e:  # reported below, after the others
            errors.append(e)

    for i in range(0, len(hosts), 2):
        threads = [threading.Thread(target=start, args=(h,), daemon=True) for h in hosts[i:i + 2]]
        for t in threads:
            t.start()
        for t in threads:
            t.join(START_TIMEOUT_S + 30)
        if errors:
            stop_all(hosts)
            raise errors[0]
