"""Pytest fixtures: a real Redis Cluster of three masters on loopback
(``ops/bench/redis_cluster.py``).

The fixtures are registered for every test in ``tests/conftest.py``:

* ``redis_cluster`` — one cluster per test module, for tests that do not break it (each test
  uses its own key prefix, see :func:`unique_prefix`);
* ``fresh_cluster`` — a cluster of its own, for a test that kills or freezes nodes;
* ``idle_cluster`` — ports chosen, nothing started: the test starts it when it wants.

Every cluster lives in the test's tmp dir and is killed at the end. Tests are skipped with a clear
reason when ``redis-server`` is not installed (``.ci/setup --test`` installs it).
"""

from __future__ import annotations

import itertools
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from asymcache.ops.bench.redis_cluster import LocalRedisCluster

_PREFIXES = itertools.count()


def _require_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/setup --test installs it)")


def unique_prefix() -> str:
    """A key prefix no other test of this process uses."""
    return f"t{next(_PREFIXES)}:"


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0,
               interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def make_certs(root: Path) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (``openssl``):
    ``(ca.crt, server.crt, server.key)`` paths under ``root``."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    root.mkdir(parents=True, exist_ok=True)
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    steps = [
        ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=asymcache-test-ca"],
        ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"],
        ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
         "-CAcreateserial", "-days", "2", "-extfile", "ext.cnf", "-out", "server.crt"],
    ]
    for step in steps:
        subprocess.run(["openssl", *step], cwd=root, check=True, capture_output=True, timeout=30)
    return str(root / "ca.crt"), str(root / "server.crt"), str(root / "server.key")


def _cluster(root: Path, start: bool, **options: object) -> Iterator[LocalRedisCluster]:
    _require_server()
    cluster = LocalRedisCluster(root, **options)
    try:
        if start:
            cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    yield from _cluster(tmp_path_factory.mktemp("redis"), start=True)


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    yield from _cluster(tmp_path / "redis", start=True)


@pytest.fixture
def idle_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    yield from _cluster(tmp_path / "redis", start=False)
