"""Real processes for the deployment tests: the daemon, the engine and a Prometheus server.

Everything listens on free loopback ports; every process is started here and stopped by its own
pid (SIGTERM, then SIGKILL after a bound). Waits poll with a deadline, never forever.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DOCKER = REPO / "docker"
TORCHLESS = Path(__file__).resolve().parent / "torchless.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get(url: str, timeout_s: float = 5.0) -> tuple[int, bytes]:
    """``(status, body)`` of ``GET url``; raises ``OSError`` if nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as reply:
            return reply.status, reply.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def http_post_json(url: str, body: dict, timeout_s: float = 120.0) -> dict:
    """``POST url`` with a JSON body; the JSON reply (raises on a non-2xx status)."""
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout_s) as reply:
        return json.loads(reply.read())


def poll(what: str, probe: Callable[[], Any], timeout_s: float, period_s: float = 0.2) -> Any:
    """Call ``probe`` until it returns something truthy (returned) or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(period_s)
    raise TimeoutError(f"{what}: not within {timeout_s}s (last: {last!r})")


@dataclass
class Service:
    """A child process and the HTTP base URL it serves (``http://127.0.0.1:PORT``)."""

    name: str
    proc: subprocess.Popen
    url: str
    log_path: Path

    def log_tail(self, n: int = 30) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def wait_http(self, path: str, timeout_s: float) -> None:
        """Wait until ``GET path`` answers 200 (fails early, with the log, if the process dies)."""

        def probe() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n"
                                   f"{self.log_tail()}")
            try:
                return http_get(self.url + path, timeout_s=1.0)[0] == 200
            except OSError:
                return False

        try:
            poll(f"{self.name} {path}", probe, timeout_s)
        except TimeoutError as e:
            raise TimeoutError(f"{e}\n{self.log_tail()}") from None

    def metrics(self) -> str:
        status, body = http_get(self.url + "/metrics")
        assert status == 200, f"{self.name} /metrics answered {status}"
        return body.decode()

    def stop(self, timeout_s: float = 20.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait(10)


def spawn(name: str, cmd: Sequence[str], port: int, log_dir: Path,
          env: dict[str, str] | None = None) -> Service:
    log_path = log_dir / f"{name}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=env,
                                cwd=log_dir, start_new_session=True)
    return Service(name, proc, f"http://127.0.0.1:{port}", log_path)


def start_daemon(workdir: Path, endpoint: str, flags: dict[str, str]) -> Service:
    """``asymcache serve`` with the engine's dependencies made unimportable (see torchless.py)."""
    port = free_port()
    cmd = [sys.executable, str(TORCHLESS), "serve", "--endpoint", endpoint,
           "--data-dir", str(workdir / "data"), "--metrics-host", "127.0.0.1",
           "--metrics-port", str(port)]
    for flag, value in flags.items():
        cmd += [f"--{flag}", value]
    daemon = spawn("daemon", cmd, port, workdir)
    daemon.wait_http("/readyz", timeout_s=30)
    return daemon


def exported_names(exposition: str) -> set[str]:
    """Every series name a ``/metrics`` text can produce: sample names, plus the names of
    declared families that have no sample yet (a counter's ``_total``, a histogram's
    ``_bucket``/``_sum``/``_count``)."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "summary": ("_sum", "_count", ""), "gauge": ("",), "untyped": ("",)}
    for family in text_string_to_metric_families(exposition):
        names.update(s.name for s in family.samples)
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def sample(exposition: str, name: str, **labels: str) -> float:
    """The value of the series ``name`` with exactly ``labels`` in a ``/metrics`` text (0.0 if
    absent)."""
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0.0
