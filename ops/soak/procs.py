"""Engine server processes of the soak, and the scrapes the faults measure with.

:class:`EngineProcess` runs ``python -m asymcache.ops.cli engine`` (the ``asymcache engine``
command: the OpenAI-style HTTP API) on a loopback port, waits for ``/health``, and is killed
with SIGKILL or stopped with SIGTERM; it only ever signals the process it started. Restarting
one starts the same command again on the same port (and the same ``--engine-id``, so the daemon
replaces the dead engine's session).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping

import httpx

ENGINE_INFO = "asymcache_engine_info"
CONNECTED = "asymcache_engine_daemon_connected"
RECONNECTS = "asymcache_engine_daemon_reconnects_total"


def scrape(url: str, timeout_s: float = 2.0) -> dict[str, float]:
    """Every sample of a Prometheus ``/metrics`` page: ``name{k=v,...}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=timeout_s).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[s.name + (f"{{{labels}}}" if labels else "")] = float(s.value)
    return out


def log_tail(path: str, lines: int = 15) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 16384))
            return "\n".join(fh.read().decode(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class EngineProcess:
    """Engine ``index`` of the soak on ``127.0.0.1:port``; ``flags`` are ``asymcache engine``
    flags (``{"num_gpu_blocks": 48}`` -> ``--num-gpu-blocks 48``)."""

    def __init__(self, index: int, port: int, flags: Mapping[str, object], log_path: str) -> None:
        self.index, self.port, self.log_path = index, port, log_path
        self.flags = dict(flags)
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "asymcache.ops.cli", "engine", "--host", "127.0.0.1",
               "--port", str(self.port)]
        for name, value in self.flags.items():
            cmd += [f"--{name.replace('_', '-')}", str(value)]
        return cmd

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=log,
                                         start_new_session=True)
        self.starts += 1

    def wait_healthy(self, timeout_s: float) -> float:
        """Seconds until ``/health`` answers 200; raises with the log's tail if the process
        exits or the time runs out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.proc is None or self.proc.poll() is not None:
                code = None if self.proc is None else self.proc.returncode
                raise RuntimeError(f"engine {self.index} exited ({code}) during start-up; "
                                   f"{self.log_path} ends with:\n{log_tail(self.log_path)}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return time.monotonic() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"engine {self.index} was not healthy within {timeout_s:.0f} s; "
                           f"{self.log_path} ends with:\n{log_tail(self.log_path)}")

    def metrics(self) -> dict[str, float]:
        return scrape(f"{self.url}/metrics")

    def link(self) -> tuple[bool, float]:
        """(connected to the daemon, registrations again so far), from ``/metrics``."""
        m = self.metrics()
        return m.get(CONNECTED, 0.0) == 1.0, m.get(RECONNECTS, 0.0)

    def kill(self) -> None:
        """SIGKILL (a crash) and reap."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(30)

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM (uvicorn drains, the engine releases its leases); SIGKILL if it hangs."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
