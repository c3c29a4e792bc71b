"""Session fixtures: one real daemon, one real engine and one real Prometheus scraping both.

They are shared by the scrape tests and the dashboard tests (starting them costs a few seconds).
Tests that count series compare against a baseline read just before their own traffic, so they
do not depend on each other's order.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.compose import dotenv
from tests.docker.prom import Prometheus, loopback_config, start_prometheus
from tests.docker.services import Service, free_port, spawn, start_daemon

# Small tiers; a slot holds one block of the built-in model (4 layers x 2 x 16 x 2 x 32 fp32).
# The residency policy and cost model are the deployment's (docker/.env).
DAEMON_FLAGS = {"cpu-bytes": "4MiB", "cpu-slot-bytes": "64KiB", "disk-bytes": "16MiB",
                "lease-timeout-s": "30", "log-level": "info",
                "policy": dotenv()["ASYMCACHE_DAEMON_POLICY"],
                "cost-preset": dotenv()["ASYMCACHE_DAEMON_COST_PRESET"]}
ENGINE_STARTUP_S = 180.0


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    # Short path: ipc socket paths are limited to ~100 bytes.
    with tempfile.TemporaryDirectory(prefix="acdk-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def endpoint(workdir: Path) -> str:
    return f"ipc://{workdir}/daemon.ipc"


@pytest.fixture(scope="session")
def daemon(workdir: Path, endpoint: str) -> Iterator[Service]:
    service = start_daemon(workdir, endpoint, DAEMON_FLAGS)
    yield service
    service.stop()


@pytest.fixture(scope="session")
def engine(workdir: Path, endpoint: str, daemon: Service) -> Iterator[Service]:
    """``asymcache engine`` with the built-in model on CPU, linked to the daemon."""
    port = free_port()
    cmd = [sys.executable, "-m", "asymcache.ops.cli", "engine", "--model", "builtin",
           "--device", "cpu", "--host", "127.0.0.1", "--port", str(port),
           "--cache-endpoint", endpoint]
    env = {**os.environ, "ASYMCACHE_CACHE_DIR": str(workdir / "models")}
    service = spawn("engine", cmd, port, workdir, env=env)
    try:
        service.wait_http("/health", timeout_s=ENGINE_STARTUP_S)
    except BaseException:
        service.stop()
        raise
    yield service
    service.stop()


@pytest.fixture(scope="session")
def prometheus(workdir: Path, daemon: Service, engine: Service) -> Iterator[Prometheus]:
    targets = {"asymcache-daemon": daemon.url.removeprefix("http://"),
               "asymcache-engine": engine.url.removeprefix("http://")}
    prom = start_prometheus(workdir / "prometheus", loopback_config(targets))
    yield prom
    prom.service.stop()
